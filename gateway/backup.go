package gateway

// Backups (tunnel-gateway backup, restore, and run --backup-dir): a
// consistent online snapshot of the store, encrypted with age (pkg/backup).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/backup"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/store/pgstore"
	"github.com/tunnelhq/tunnel/pkg/store/sqlitestore"
)

// Audit event types of backups and KEK rotations.
const (
	AuditBackupCreated    audit.Type = "backup.created"
	AuditBackupRestored   audit.Type = "backup.restored"
	AuditKEKRotateStarted audit.Type = "kek.rotate_started"
	AuditKEKRotated       audit.Type = "kek.rotated"
)

// BackupFileSuffix ends the names of scheduled backups.
const BackupFileSuffix = ".tunnel-backup"

// BackupConfig says what tunnel-gateway backup backs up, and where to.
type BackupConfig struct {
	DataDir       string
	Store         string
	StoreInsecure bool
	// Out is the backup file to write (replaced atomically, mode 0600).
	Out        string
	Recipients []age.Recipient
	// Actor is who asked, for the audit event.
	Actor string
	ID    string
	Clock func() time.Time

	// scheduledAt is the period a scheduled backup claimed.
	scheduledAt time.Time
}

// BackupResult describes a backup written.
type BackupResult struct {
	File   string        `json:"file"`
	Size   int64         `json:"size"`
	Header backup.Header `json:"header"`
}

// Backup writes a backup of the cluster's store while its gateways run.
func Backup(ctx context.Context, cfg BackupConfig) (*BackupResult, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ID == "" {
		cfg.ID = hostname()
	}
	st, err := openExisting(ctx, cfg.DataDir, cfg.Store, cfg.StoreInsecure)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return backupTo(ctx, st, cfg)
}

// openExisting opens the store of an existing cluster (for backup and kek
// rotate): it does not create an SQLite database where there is none.
func openExisting(ctx context.Context, dataDir, url string, insecure bool) (store.Store, error) {
	if err := checkStoreURL(url); err != nil {
		return nil, err
	}
	if url == "" {
		if dataDir == "" {
			return nil, errors.New("give --data-dir (SQLite) or --store postgres://... (PostgreSQL)")
		}
		if _, err := os.Stat(filepath.Join(dataDir, DBFile)); err != nil {
			return nil, fmt.Errorf("no cluster in %s: give the data directory of a gateway (tunnel-gateway init created it), or --store", dataDir)
		}
	}
	st, err := openStore(ctx, storeOptions{dataDir: dataDir, url: url, insecure: insecure, origin: "backup"})
	if err != nil {
		return nil, err
	}
	if _, err := st.GetMeta(ctx, "cluster"); err != nil {
		st.Close()
		if errors.Is(err, store.ErrNotFound) {
			return nil, errors.New("the store holds no cluster yet: run tunnel-gateway init first")
		}
		return nil, fmt.Errorf("read cluster name: %w", storeError(err))
	}
	return st, nil
}

// backupTo backs st up to cfg.Out and records it in the audit log.
func backupTo(ctx context.Context, st store.Store, cfg BackupConfig) (*BackupResult, error) {
	sn, ok := concrete(st).(store.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("this store (%T) cannot take snapshots", st)
	}
	if len(cfg.Recipients) == 0 {
		return nil, errors.New("no recipient: give --recipient AGE-PUBLIC-KEY")
	}
	cluster, err := st.GetMeta(ctx, "cluster")
	if err != nil {
		return nil, fmt.Errorf("read cluster name: %w", storeError(err))
	}
	kek, err := kekInfo(ctx, st, cluster)
	if err != nil {
		return nil, err
	}
	// The snapshot is in the clear (its secrets sealed): in a private
	// directory, removed when done.
	tmpDir, err := os.MkdirTemp("", "tunnel-backup-")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	payload, err := os.OpenFile(filepath.Join(tmpDir, "snapshot"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer payload.Close()
	info, err := sn.Snapshot(ctx, payload)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", storeError(err))
	}
	h := backup.Header{StoreKind: info.Kind, SchemaVersion: info.SchemaVersion, Cluster: cluster,
		CreatedAt: cfg.Clock().UTC().Truncate(time.Second), Gateway: cfg.ID, KEK: kek}

	dir := filepath.Dir(cfg.Out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(cfg.Out)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	if h, err = backup.Write(tmp, cfg.Recipients, h, payload); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), cfg.Out); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	syncDir(dir)
	res := &BackupResult{File: cfg.Out, Size: fi.Size(), Header: h}
	actor := cfg.Actor
	if actor == "" {
		actor = "system"
	}
	ev := audit.Event{Time: cfg.Clock(), Type: AuditBackupCreated, Actor: actor, Subject: filepath.Base(cfg.Out), Outcome: audit.Success,
		Details: map[string]string{"gateway": cfg.ID, "store": h.StoreKind, "schema_version": strconv.Itoa(h.SchemaVersion),
			"payload_sha256": h.PayloadSHA256, "size": strconv.FormatInt(res.Size, 10), "recipients": strconv.Itoa(len(cfg.Recipients))}}
	if !cfg.scheduledAt.IsZero() {
		ev.Details["scheduled_at"] = cfg.scheduledAt.UTC().Format(time.RFC3339Nano)
	}
	if _, err := st.AppendAudit(ctx, ev); err != nil {
		return res, fmt.Errorf("the backup %s was written, but its audit event was not: %w", cfg.Out, storeError(err))
	}
	return res, nil
}

// concrete returns the store under any wrappers (the metrics'), whose
// optional interfaces (store.Snapshotter, store.SealedStore) the wrappers
// do not have.
func concrete(st store.Store) store.Store {
	for {
		w, ok := st.(interface{ Unwrap() store.Store })
		if !ok {
			return st
		}
		st = w.Unwrap()
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// kekInfo names the KEK the store's secrets are sealed with.
func kekInfo(ctx context.Context, st store.Store, cluster string) (backup.KEKInfo, error) {
	if b, err := st.GetMeta(ctx, "key_backend"); err == nil && b == "vault" {
		kek, _, _, _ := vaultKeyNames(cluster)
		return backup.KEKInfo{Backend: "vault", VaultKey: kek}, nil
	}
	info := backup.KEKInfo{Backend: "file"}
	ids, err := sealedKeyIDs(ctx, st, true)
	if err != nil {
		return info, err
	}
	for _, id := range ids {
		info.KeyIDs = append(info.KeyIDs, id.String())
	}
	return info, nil
}

// sealedKeyIDs returns the IDs of the KEKs that sealed the store's CA keys
// and TOTP secrets (and recordings unless quick), sorted.
func sealedKeyIDs(ctx context.Context, st store.Store, quick bool) ([]seal.KeyID, error) {
	ss, ok := concrete(st).(store.SealedStore)
	if !ok {
		return nil, nil
	}
	refs, err := ss.SealedRefs(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	seen := map[seal.KeyID]bool{}
	var ids []seal.KeyID
	for _, ref := range refs {
		if quick && ref.Kind == store.SealedRecording {
			continue
		}
		v, err := ss.GetSealed(ctx, ref)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError(err)
		}
		if id, ok := seal.SealedKeyID(v); ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	return ids, nil
}

// RestoreConfig says what tunnel-gateway restore restores, and where.
type RestoreConfig struct {
	In         string
	Identities []age.Identity
	// DataDir receives the SQLite store (and, for any store, the note of
	// the KEK needed); Store, if set, is the empty PostgreSQL database to
	// restore into.
	DataDir       string
	Store         string
	StoreInsecure bool
	// KEKFile is where the gateway will find its KEK (default DataDir/kek).
	KEKFile string
	Clock   func() time.Time
}

// RestoreResult describes a restore.
type RestoreResult struct {
	Header backup.Header `json:"header"`
	// KEKMissing, when set, says what the gateway lacks before it can run.
	KEKMissing string `json:"kek_missing,omitempty"`
}

// Restore refusals.
var (
	ErrRestoreNotEmpty = errors.New("the target already holds a cluster")
)

// Restore restores a backup into an empty data directory or database.
func Restore(ctx context.Context, cfg RestoreConfig) (*RestoreResult, error) {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if err := checkStoreURL(cfg.Store); err != nil {
		return nil, err
	}
	if cfg.Store == "" && cfg.DataDir == "" {
		return nil, errors.New("give --data-dir (an empty directory for the SQLite store) or --store postgres://... (an empty database)")
	}
	if cfg.KEKFile == "" && cfg.DataDir != "" {
		cfg.KEKFile = filepath.Join(cfg.DataDir, KEKFile)
	}
	if cfg.Store == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, DBFile)); err == nil {
			return nil, fmt.Errorf("%w: the data directory %s already holds a cluster (%s); restore only into an empty data directory", ErrRestoreNotEmpty, cfg.DataDir, DBFile)
		}
	}
	f, err := os.Open(cfg.In)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	rd, err := backup.Open(f, cfg.Identities)
	if err != nil {
		return nil, restoreError(cfg.In, err)
	}
	h := rd.Header
	switch {
	case h.StoreKind == store.KindSQLite && cfg.Store != "":
		return nil, fmt.Errorf("%s is a backup of an SQLite store: restore it into a data directory (--data-dir, without --store)", cfg.In)
	case h.StoreKind == store.KindPostgres && cfg.Store == "":
		return nil, fmt.Errorf("%s is a backup of a PostgreSQL store: restore it into an empty database (--store postgres://...)", cfg.In)
	case h.StoreKind != store.KindSQLite && h.StoreKind != store.KindPostgres:
		return nil, fmt.Errorf("%s is a backup of an unknown kind of store %q", cfg.In, h.StoreKind)
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	// The payload is checked whole before any of it is used.
	tmpDir, err := os.MkdirTemp(cfg.DataDir, ".restore-")
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	payload, err := os.OpenFile(filepath.Join(tmpDir, "snapshot"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer payload.Close()
	if err := rd.Payload(payload); err != nil {
		return nil, restoreError(cfg.In, err)
	}
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if cfg.Store == "" {
		err = sqlitestore.Restore(ctx, filepath.Join(cfg.DataDir, DBFile), payload)
		if errors.Is(err, sqlitestore.ErrNotEmpty) {
			return nil, fmt.Errorf("%w: the data directory %s already holds a cluster; restore only into an empty data directory", ErrRestoreNotEmpty, cfg.DataDir)
		}
	} else {
		err = pgstore.Restore(ctx, cfg.Store, pgstore.Options{Insecure: cfg.StoreInsecure}, payload)
		if errors.Is(err, pgstore.ErrNotEmpty) {
			return nil, fmt.Errorf("%w: the database %s already holds a cluster; restore only into an empty database", ErrRestoreNotEmpty, pgstore.Describe(cfg.Store))
		}
	}
	if err != nil {
		return nil, storeError(err)
	}
	res := &RestoreResult{Header: h}
	res.KEKMissing = checkRestoredKEK(cfg, h)
	st, err := openStore(ctx, storeOptions{dataDir: cfg.DataDir, url: cfg.Store, insecure: cfg.StoreInsecure, origin: "restore"})
	if err != nil {
		return res, err
	}
	defer st.Close()
	// The heartbeats of the gateways that ran when the backup was taken
	// are not gateways of the restored cluster: one starting now with the
	// same id must not be refused as a duplicate.
	gws, err := st.ListGateways(ctx)
	if err != nil {
		return res, storeError(err)
	}
	for _, gw := range gws {
		if err := st.DeleteGateway(ctx, gw.ID); err != nil {
			return res, storeError(err)
		}
	}
	ev := audit.Event{Time: cfg.Clock(), Type: AuditBackupRestored, Actor: "system", Subject: filepath.Base(cfg.In), Outcome: audit.Success,
		Details: map[string]string{"created_at": h.CreatedAt.Format(time.RFC3339), "payload_sha256": h.PayloadSHA256, "from_gateway": h.Gateway}}
	if _, err := st.AppendAudit(ctx, ev); err != nil {
		return res, fmt.Errorf("the backup was restored, but its audit event was not: %w", storeError(err))
	}
	return res, nil
}

// restoreError words a backup's refusal.
func restoreError(file string, err error) error {
	switch {
	case errors.Is(err, backup.ErrWrongIdentity):
		return fmt.Errorf("%s cannot be decrypted with this identity: it is encrypted to other age recipients (or its age header was altered); give --identity with the key of one of its recipients: %w", file, err)
	case errors.Is(err, backup.ErrDamaged):
		return fmt.Errorf("%s is damaged (altered or truncated) and was not restored; nothing was written: use another copy of the backup: %w", file, err)
	}
	return fmt.Errorf("restore %s: %w", file, err)
}

// checkRestoredKEK says what KEK the restored store needs, if the gateway
// does not have it at cfg.KEKFile, and leaves a note (seal.HintFile)
// beside it so that tunnel-gateway run says it too.
func checkRestoredKEK(cfg RestoreConfig, h backup.Header) string {
	if h.KEK.Backend == "vault" {
		return ""
	}
	if cfg.KEKFile == "" {
		if len(h.KEK.KeyIDs) == 0 {
			return "copy the KEK file from the original gateway to each gateway's data directory (DIR/kek, or --kek-file)"
		}
		return fmt.Sprintf("the backup's secrets are sealed with key-encryption key ID %s: copy the KEK file from the original gateway to each gateway's data directory (DIR/kek, or --kek-file)", strings.Join(h.KEK.KeyIDs, ", "))
	}
	var have []string
	if kf, err := seal.NewKeyFileSealer(cfg.KEKFile); err == nil {
		for _, id := range kf.Keyring().IDs() {
			have = append(have, id.String())
		}
		missing := false
		for _, id := range h.KEK.KeyIDs {
			if !slices.Contains(have, id) {
				missing = true
			}
		}
		if !missing {
			os.Remove(filepath.Join(filepath.Dir(cfg.KEKFile), seal.HintFile))
			return ""
		}
	}
	ids := strings.Join(h.KEK.KeyIDs, ", ")
	if ids == "" {
		ids = "(not recorded: sealed before key IDs existed)"
	}
	if len(h.KEK.KeyIDs) > 0 {
		_ = os.WriteFile(filepath.Join(filepath.Dir(cfg.KEKFile), seal.HintFile), []byte(strings.Join(h.KEK.KeyIDs, "\n")+"\n"), 0o600)
	}
	if have != nil {
		return fmt.Sprintf("the backup's secrets are sealed with key-encryption key ID %s, but %s holds %s: copy the KEK file from the original gateway to %s", ids, cfg.KEKFile, strings.Join(have, ", "), cfg.KEKFile)
	}
	return fmt.Sprintf("the backup's secrets are sealed with key-encryption key ID %s: copy the KEK file from the original gateway to %s", ids, cfg.KEKFile)
}

// BackupSchedule makes a gateway back its store up on its own (run
// --backup-dir). Several gateways sharing a store may all have it: each
// period, the one that claims it in the store (store.JobClaimer) backs up.
type BackupSchedule struct {
	Dir   string
	Every time.Duration
	// Keep is how many backups to keep in Dir (older ones are removed);
	// zero means 7.
	Keep           int
	Recipients     []string
	RecipientFiles []string
}

// DefaultBackupKeep is BackupSchedule.Keep's default.
const DefaultBackupKeep = 7

// StartBackups starts the backup schedule of cfg.Backup, if any: a
// goroutine that the gateway's Close stops and waits for. Call it once,
// after New and before Serve.
func (g *Gateway) StartBackups() error {
	sc := g.cfg.Backup
	if sc.Dir == "" {
		return nil
	}
	if sc.Every <= 0 {
		sc.Every = 24 * time.Hour
	}
	if sc.Keep <= 0 {
		sc.Keep = DefaultBackupKeep
	}
	rs, err := backup.ParseRecipients(sc.Recipients, sc.RecipientFiles)
	if err != nil {
		return fmt.Errorf("--backup-dir: %w", err)
	}
	if err := os.MkdirAll(sc.Dir, 0o700); err != nil {
		return fmt.Errorf("--backup-dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	prev := g.bgCancel
	g.bgCancel = func() { cancel(); prev() }
	log := g.cfg.Log.With("component", "backup")
	g.bgWG.Add(1)
	go func() {
		defer g.bgWG.Done()
		defer panics.Recover(log, "backup schedule", nil)
		g.backupLoop(ctx, sc, rs, log)
	}()
	return nil
}

// backupJob is the store's name of the scheduled backup (store.JobClaimer).
const backupJob = "backup"

// backupCheck is how often the schedule asks the store whether a backup is
// due: at most a minute, so a backup is at most that late.
func backupCheck(every time.Duration) time.Duration {
	return min(every/4, time.Minute)
}

func (g *Gateway) backupLoop(ctx context.Context, sc BackupSchedule, rs []age.Recipient, log *slog.Logger) {
	jc, _ := concrete(g.store).(store.JobClaimer)
	t := time.NewTicker(backupCheck(sc.Every))
	defer t.Stop()
	retry := false
	for {
		// Of the gateways with a schedule, the one that claims the period
		// in the store backs up; a restart neither skips nor repeats one.
		due := retry
		at := g.cfg.Clock()
		if !due {
			if jc == nil {
				due = true
			} else {
				ok, err := jc.ClaimJob(ctx, backupJob, g.cfg.ID, at, sc.Every)
				if err != nil && ctx.Err() == nil {
					log.Warn("ask the store whether a backup is due", "err", storeError(err))
				}
				due = ok
			}
		}
		if due {
			retry = !g.scheduledBackup(ctx, sc, rs, log, at)
			if jc == nil && !retry {
				// Without a store to elect through, the period is kept here.
				select {
				case <-ctx.Done():
					return
				case <-time.After(sc.Every):
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scheduledBackup writes one backup into sc.Dir and prunes the old ones;
// it reports whether it succeeded (a failure is logged and audited, and
// retried at the next check).
func (g *Gateway) scheduledBackup(ctx context.Context, sc BackupSchedule, rs []age.Recipient, log *slog.Logger, at time.Time) bool {
	name := fmt.Sprintf("%s-%s%s", g.Cluster(), at.UTC().Format("20060102T150405.000Z"), BackupFileSuffix)
	out := filepath.Join(sc.Dir, name)
	res, err := backupTo(ctx, g.store, BackupConfig{Out: out, Recipients: rs, Actor: "system", ID: g.cfg.ID, Clock: g.cfg.Clock, scheduledAt: at})
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		log.Error("scheduled backup failed; retrying", "err", err)
		ev := audit.Event{Time: g.cfg.Clock(), Type: AuditBackupCreated, Actor: "system", Subject: name,
			Outcome: audit.Failure, Reason: err.Error(), Details: map[string]string{"gateway": g.cfg.ID}}
		if _, aerr := g.store.AppendAudit(ctx, ev); aerr != nil {
			log.Warn("record the failed backup in the audit log", "err", aerr)
		}
		return false
	}
	log.Info("backup written", "file", res.File, "bytes", res.Size)
	pruneBackups(sc.Dir, sc.Keep, log)
	return true
}

// backupFiles lists the scheduled backups in dir, oldest first (their
// names sort by time).
func backupFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), BackupFileSuffix) && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// pruneBackups removes all but the keep newest backups of dir.
func pruneBackups(dir string, keep int, log *slog.Logger) {
	names := backupFiles(dir)
	for len(names) > keep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("remove an old backup", "file", names[0], "err", err)
		}
		names = names[1:]
	}
}
