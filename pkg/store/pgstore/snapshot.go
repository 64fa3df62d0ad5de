package pgstore

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelhq/tunnel/pkg/store"
)

var _ store.Snapshotter = (*Store)(nil)

// snapshotMagic starts a PostgreSQL snapshot. The format, after it:
//
//	uint32 schema version
//	per table, parents before the tables that reference them:
//	  uint32 length || table name, uint32 length || column list (comma-separated)
//	  chunks of COPY text output: uint32 length || bytes; a zero length ends the table
//	uint32 0 (an empty table name) ends the snapshot
//
// Integers are big-endian.
const snapshotMagic = "tunnel-pg-snapshot-1\n"

// Snapshot implements store.Snapshotter: every table of the schema, but
// schema_migrations, copied (COPY ... TO STDOUT, text format) in one
// REPEATABLE READ, READ ONLY transaction, so the copy is of one instant
// while gateways keep writing.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (store.SnapshotInfo, error) {
	info := store.SnapshotInfo{Kind: store.KindPostgres}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", classify(ctx, err))
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", classify(ctx, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&info.SchemaVersion); err != nil {
		return info, fmt.Errorf("snapshot: %w", classify(ctx, err))
	}
	tables, err := snapshotTables(ctx, tx)
	if err != nil {
		return info, fmt.Errorf("snapshot: %w", classify(ctx, err))
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(snapshotMagic)
	writeUint32(bw, uint32(info.SchemaVersion))
	for _, t := range tables {
		writeString(bw, t.name)
		writeString(bw, strings.Join(t.cols, ","))
		cw := &chunkWriter{w: bw}
		sql := fmt.Sprintf(`COPY %s (%s) TO STDOUT`, pgx.Identifier{t.name}.Sanitize(), quoteCols(t.cols))
		if _, err := tx.Conn().PgConn().CopyTo(ctx, cw, sql); err != nil {
			return info, fmt.Errorf("snapshot of table %s: %w", t.name, classify(ctx, err))
		}
		writeUint32(bw, 0)
	}
	writeUint32(bw, 0)
	if err := bw.Flush(); err != nil {
		return info, fmt.Errorf("snapshot: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return info, fmt.Errorf("snapshot: %w", classify(ctx, err))
	}
	return info, nil
}

type snapTable struct {
	name string
	cols []string
}

// snapshotTables lists the schema's tables (but schema_migrations) with
// their columns, parents before the tables whose foreign keys name them.
func snapshotTables(ctx context.Context, q querier) ([]snapTable, error) {
	rows, err := q.Query(ctx, `SELECT c.table_name, c.column_name
		FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
			AND c.table_name <> 'schema_migrations' AND c.is_generated <> 'ALWAYS'
		ORDER BY c.table_name, c.ordinal_position`)
	if err != nil {
		return nil, err
	}
	cols := map[string][]string{}
	var names []string
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return nil, err
		}
		if _, ok := cols[t]; !ok {
			names = append(names, t)
		}
		cols[t] = append(cols[t], c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT cl.relname, pcl.relname FROM pg_constraint k
		JOIN pg_class cl ON cl.oid = k.conrelid JOIN pg_class pcl ON pcl.oid = k.confrelid
		JOIN pg_namespace n ON n.oid = cl.relnamespace
		WHERE k.contype = 'f' AND n.nspname = current_schema()`)
	if err != nil {
		return nil, err
	}
	parents := map[string][]string{}
	for rows.Next() {
		var child, parent string
		if err := rows.Scan(&child, &parent); err != nil {
			rows.Close()
			return nil, err
		}
		if child != parent {
			parents[child] = append(parents[child], parent)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []snapTable
	done := map[string]bool{}
	var visit func(string, int) error
	visit = func(t string, depth int) error {
		if done[t] {
			return nil
		}
		if depth > len(names) {
			return fmt.Errorf("foreign keys form a cycle at table %s", t)
		}
		for _, p := range parents[t] {
			if _, ok := cols[p]; ok {
				if err := visit(p, depth+1); err != nil {
					return err
				}
			}
		}
		done[t] = true
		out = append(out, snapTable{name: t, cols: cols[t]})
		return nil
	}
	for _, t := range names {
		if err := visit(t, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// chunkWriter frames what COPY writes as length-prefixed chunks.
type chunkWriter struct{ w *bufio.Writer }

func (c *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	writeUint32(c.w, uint32(len(p)))
	return c.w.Write(p)
}

func writeUint32(w *bufio.Writer, n uint32) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	w.Write(b[:])
}

func writeString(w *bufio.Writer, s string) {
	writeUint32(w, uint32(len(s)))
	w.WriteString(s)
}

// maxChunk bounds one chunk or name read back.
const maxChunk = 64 << 20

func readUint32(r io.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func readString(r io.Reader) (string, error) {
	n, err := readUint32(r)
	if err != nil {
		return "", err
	}
	if n > 1<<16 {
		return "", errors.New("malformed snapshot")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// chunkReader reads the chunks of one table until the zero length.
type chunkReader struct {
	r    io.Reader
	left uint32
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		n, err := readUint32(c.r)
		if err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		if n > maxChunk {
			return 0, errors.New("malformed snapshot: chunk too large")
		}
		c.left = n
	}
	if uint32(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= uint32(n)
	if err == io.EOF {
		if c.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// ErrNotEmpty refuses a restore into a database that already holds a
// cluster.
var ErrNotEmpty = errors.New("the database already holds a cluster")

// Restore loads the snapshot r (made by Snapshot) into the database at
// url, which must hold no cluster yet (an empty database, or one whose
// schema alone was created): in one transaction, after bringing the schema
// up to date, every table is emptied and copied in (COPY ... FROM STDIN),
// and the identity sequences are moved past the restored ids. A snapshot of
// a newer schema than this binary's is refused. Nothing is written unless
// the whole snapshot loads.
func Restore(ctx context.Context, url string, opts Options, r io.Reader) error {
	st, err := OpenWith(ctx, url, opts)
	if err != nil {
		return err
	}
	defer st.Close()
	conn, err := st.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The migration lock keeps gateways starting on this database out
	// until the restore is committed.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	var used bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM meta) OR EXISTS (SELECT 1 FROM ca_keys) OR EXISTS (SELECT 1 FROM audit_events)`).Scan(&used); err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	if used {
		return fmt.Errorf("restore into %s: %w", describe(st.connCfg), ErrNotEmpty)
	}
	br := bufio.NewReaderSize(r, 1<<16)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return errors.New("restore: this is not a PostgreSQL snapshot of tunnel-gateway")
	}
	v, err := readUint32(br)
	if err != nil {
		return fmt.Errorf("restore: %w", io.ErrUnexpectedEOF)
	}
	if int(v) > SchemaVersion() {
		return fmt.Errorf("restore: the snapshot's schema version %d is newer than this gateway's (%d): restore with the tunnel-gateway version that made it, or a newer one", v, SchemaVersion())
	}
	tables, err := snapshotTables(ctx, tx)
	if err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	known := map[string]bool{}
	for _, t := range tables {
		known[t.name] = true
	}
	for {
		name, err := readString(br)
		if err != nil {
			return fmt.Errorf("restore: the snapshot is truncated: %w", io.ErrUnexpectedEOF)
		}
		if name == "" {
			break
		}
		colList, err := readString(br)
		if err != nil {
			return fmt.Errorf("restore: the snapshot is truncated: %w", io.ErrUnexpectedEOF)
		}
		if !known[name] {
			return fmt.Errorf("restore: the snapshot has a table %q this schema lacks", name)
		}
		cols := strings.Split(colList, ",")
		// Rows a migration put there (audit_head's) give way to the
		// snapshot's; parents come first, so CASCADE empties only tables
		// still to come.
		if _, err := tx.Exec(ctx, `TRUNCATE `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
			return fmt.Errorf("restore table %s: %w", name, classify(ctx, err))
		}
		sql := fmt.Sprintf(`COPY %s (%s) FROM STDIN`, pgx.Identifier{name}.Sanitize(), quoteCols(cols))
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, &chunkReader{r: br}, sql); err != nil {
			return fmt.Errorf("restore table %s: %w", name, classify(ctx, err))
		}
	}
	// Identity columns continue after the restored ids.
	rows, err := tx.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	var idents [][2]string
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return fmt.Errorf("restore: %w", err)
		}
		idents = append(idents, [2]string{t, c})
	}
	rows.Close()
	for _, tc := range idents {
		t, c := pgx.Identifier{tc[0]}.Sanitize(), pgx.Identifier{tc[1]}.Sanitize()
		q := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence($1, $2), COALESCE((SELECT MAX(%s) FROM %s), 0) + 1, false)`, c, t)
		if _, err := tx.Exec(ctx, q, t, tc[1]); err != nil {
			return fmt.Errorf("restore: sequence of %s.%s: %w", tc[0], tc[1], classify(ctx, err))
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("restore: %w", classify(ctx, err))
	}
	return nil
}
