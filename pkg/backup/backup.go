// Package backup is the format of tunnel-gateway's backups: a snapshot of
// the store (pkg/store's Snapshotter), encrypted with age
// (filippo.io/age) to one or more recipients.
//
// Inside the age encryption a backup is:
//
//	"tunnel-backup\n"
//	uint32 (big-endian) length || Header as JSON
//	the payload: the store's snapshot, Header.PayloadSize bytes
//
// The header names the format version, the store kind and schema version,
// the cluster, when the backup was made and the payload's SHA-256, which
// the reader checks before anything is restored. age authenticates every
// 64 KiB chunk and the end of the stream, so an altered or truncated file
// is refused as well ([ErrDamaged]); a file that is not encrypted to the
// given identity gives [ErrWrongIdentity].
//
// The KEK is never in a backup: the sealed values stay sealed, and the
// header only names the key(s) that sealed them ([KEKInfo]), so that a
// restore can say which KEK file to bring.
package backup

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
)

// Format is the version of the format Write writes.
const Format = 1

const magic = "tunnel-backup\n"

// maxHeader bounds the header read back.
const maxHeader = 1 << 16

// Header describes a backup.
type Header struct {
	Format        int       `json:"format"`
	StoreKind     string    `json:"store_kind"` // store.KindSQLite or store.KindPostgres
	SchemaVersion int       `json:"schema_version"`
	Cluster       string    `json:"cluster"`
	CreatedAt     time.Time `json:"created_at"`
	// Gateway is the id of the gateway (or host) that made it.
	Gateway       string  `json:"gateway,omitempty"`
	PayloadSize   int64   `json:"payload_size"`
	PayloadSHA256 string  `json:"payload_sha256"`
	KEK           KEKInfo `json:"kek"`
}

// KEKInfo names the key-encryption key the backup's secrets are sealed
// with, never the key itself.
type KEKInfo struct {
	// Backend is "file" (a KEK file) or "vault" (Vault Transit).
	Backend string `json:"backend"`
	// KeyIDs are the IDs (pkg/seal.KeyID) of the file KEKs whose sealed
	// values the backup holds; empty if only values of the first format,
	// which do not say, are there.
	KeyIDs []string `json:"key_ids,omitempty"`
	// VaultKey is the Transit key's name, for Backend "vault".
	VaultKey string `json:"vault_key,omitempty"`
}

// Errors of Open and Reader.Payload.
var (
	// ErrWrongIdentity: the backup is not encrypted to any of the
	// identities given.
	ErrWrongIdentity = errors.New("the backup is not encrypted to this identity")
	// ErrDamaged: the file was altered or truncated.
	ErrDamaged = errors.New("the backup is damaged: it was altered or truncated")
)

// ParseRecipients parses age recipients: each of keys (age1...), and the
// lines of each file (comments and blank lines skipped).
func ParseRecipients(keys []string, files []string) ([]age.Recipient, error) {
	var rs []age.Recipient
	for _, k := range keys {
		r, err := age.ParseRecipients(strings.NewReader(k))
		if err != nil {
			return nil, fmt.Errorf("recipient %q is not an age public key (age1...): %w", k, err)
		}
		rs = append(rs, r...)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("recipients file: %w", err)
		}
		r, err := age.ParseRecipients(fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("recipients file %s: %w", f, err)
		}
		rs = append(rs, r...)
	}
	if len(rs) == 0 {
		return nil, errors.New("no recipient: give --recipient AGE-PUBLIC-KEY (age-keygen -y KEYFILE prints it) or --recipients-file F")
	}
	return rs, nil
}

// ReadIdentities reads the age identities (AGE-SECRET-KEY-1...) of a file.
func ReadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("identity file %s holds no age identity (AGE-SECRET-KEY-1..., made by age-keygen): %w", path, err)
	}
	return ids, nil
}

// Write writes a backup of payload (read from its start to its end) to w,
// encrypted to recipients. It fills in h's Format, PayloadSize and
// PayloadSHA256, reading payload twice: once to hash it, once to copy it.
func Write(w io.Writer, recipients []age.Recipient, h Header, payload io.ReadSeeker) (Header, error) {
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	sum := sha256.New()
	n, err := io.Copy(sum, payload)
	if err != nil {
		return h, fmt.Errorf("backup: hash the snapshot: %w", err)
	}
	h.Format = Format
	h.PayloadSize = n
	h.PayloadSHA256 = hex.EncodeToString(sum.Sum(nil))
	hb, err := json.Marshal(h)
	if err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	if _, err := payload.Seek(0, io.SeekStart); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc, err := age.Encrypt(bw, recipients...)
	if err != nil {
		return h, fmt.Errorf("backup: encrypt: %w", err)
	}
	var lenb [4]byte
	binary.BigEndian.PutUint32(lenb[:], uint32(len(hb)))
	if _, err := io.WriteString(enc, magic); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	if _, err := enc.Write(lenb[:]); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	if _, err := enc.Write(hb); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	m, err := io.Copy(enc, payload)
	if err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	if m != n {
		return h, fmt.Errorf("backup: the snapshot changed size while it was written (%d, then %d bytes)", n, m)
	}
	if err := enc.Close(); err != nil {
		return h, fmt.Errorf("backup: encrypt: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return h, fmt.Errorf("backup: %w", err)
	}
	return h, nil
}

// Reader reads a backup.
type Reader struct {
	Header Header
	r      io.Reader
}

// Open decrypts a backup with identities and reads its header. The header
// is authenticated by age, but the payload is not checked until Payload has
// read it all: use nothing Payload wrote unless it returned nil.
func Open(r io.Reader, identities []age.Identity) (*Reader, error) {
	dec, err := age.Decrypt(r, identities...)
	if err != nil {
		return nil, decryptError(err)
	}
	br := bufio.NewReaderSize(dec, 64<<10)
	m := make([]byte, len(magic))
	if _, err := io.ReadFull(br, m); err != nil {
		return nil, decryptError(err)
	}
	if string(m) != magic {
		return nil, errors.New("this file is encrypted to this identity but is not a tunnel-gateway backup")
	}
	var lenb [4]byte
	if _, err := io.ReadFull(br, lenb[:]); err != nil {
		return nil, decryptError(err)
	}
	n := binary.BigEndian.Uint32(lenb[:])
	if n > maxHeader {
		return nil, fmt.Errorf("%w (header of %d bytes)", ErrDamaged, n)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(br, hb); err != nil {
		return nil, decryptError(err)
	}
	var h Header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrDamaged, err)
	}
	if h.Format != Format {
		return nil, fmt.Errorf("this backup's format %d is not one this tunnel-gateway reads (%d): restore it with the version that made it, or a newer one", h.Format, Format)
	}
	return &Reader{Header: h, r: br}, nil
}

// Payload copies the payload to w and checks its size and SHA-256 against
// the header, and that nothing follows it.
func (rd *Reader) Payload(w io.Writer) error {
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, sum), io.LimitReader(rd.r, rd.Header.PayloadSize))
	if err != nil {
		return decryptError(err)
	}
	if n != rd.Header.PayloadSize {
		return fmt.Errorf("%w (the payload ends after %d of %d bytes)", ErrDamaged, n, rd.Header.PayloadSize)
	}
	if extra, err := io.Copy(io.Discard, rd.r); err != nil {
		return decryptError(err)
	} else if extra != 0 {
		return fmt.Errorf("%w (%d bytes after the payload)", ErrDamaged, extra)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != rd.Header.PayloadSHA256 {
		return fmt.Errorf("%w (the payload's SHA-256 is %s, the header says %s)", ErrDamaged, got, rd.Header.PayloadSHA256)
	}
	return nil
}

// decryptError classifies an age error.
func decryptError(err error) error {
	var nomatch *age.NoIdentityMatchError
	if errors.As(err, &nomatch) || errors.Is(err, age.ErrIncorrectIdentity) {
		return ErrWrongIdentity
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w (it ends early)", ErrDamaged)
	}
	return fmt.Errorf("%w (%v)", ErrDamaged, err)
}
