package cli

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// hostileNode is an SFTP server that lists a name of its choosing in
// /dir, as a node that wants tunnel scp -r to write outside its
// destination would. Its file system:
//
//	/            directory holding loot.txt
//	/loot.txt    "loot": what a copy outside the destination would bring
//	/dir         directory holding ok.txt and the hostile entry
//	/dir/ok.txt  "ok"
//
// and every other path is a 4-byte file "evil", or a directory when it is
// the hostile entry and dir is set.
type hostileNode struct {
	name string // the hostile entry, sent as is
	dir  bool   // the hostile entry is a directory
}

type fakeInfo struct {
	name string
	size int64
	dir  bool
}

func (f fakeInfo) Name() string { return f.name }
func (f fakeInfo) Size() int64  { return f.size }
func (f fakeInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (f fakeInfo) ModTime() time.Time { return time.Unix(0, 0) }
func (f fakeInfo) IsDir() bool        { return f.dir }
func (f fakeInfo) Sys() any           { return nil }

type listerAt []os.FileInfo

func (l listerAt) ListAt(dst []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if n < len(dst) {
		return n, io.EOF
	}
	return n, nil
}

func (h *hostileNode) content(p string) string {
	switch p {
	case "/loot.txt":
		return "loot"
	case "/dir/ok.txt":
		return "ok"
	}
	return "evil"
}

func (h *hostileNode) stat(p string) fakeInfo {
	switch p {
	case "/", "/dir":
		return fakeInfo{name: path.Base(p), dir: true}
	}
	return fakeInfo{name: path.Base(p), size: int64(len(h.content(p))), dir: h.dir && !strings.HasSuffix(p, ".txt")}
}

func (h *hostileNode) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		switch r.Filepath {
		case "/":
			return listerAt{fakeInfo{name: "loot.txt", size: 4}}, nil
		case "/dir":
			return listerAt{fakeInfo{name: "ok.txt", size: 2}, fakeInfo{name: h.name, size: 4, dir: h.dir}}, nil
		}
		return listerAt{}, nil
	case "Stat", "Lstat":
		return listerAt{h.stat(r.Filepath)}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (h *hostileNode) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return strings.NewReader(h.content(r.Filepath)), nil
}

func (h *hostileNode) Filewrite(*sftp.Request) (io.WriterAt, error) {
	return nil, sftp.ErrSSHFxPermissionDenied
}

func (h *hostileNode) Filecmd(*sftp.Request) error { return sftp.ErrSSHFxPermissionDenied }

// serveHostile connects an SFTP client to h over in-memory pipes.
func serveHostile(t *testing.T, h *hostileNode) *remoteFS {
	t.Helper()
	clientR, serverW := io.Pipe()
	serverR, clientW := io.Pipe()
	srv := sftp.NewRequestServer(struct {
		io.Reader
		io.WriteCloser
	}{serverR, serverW}, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	c, err := sftp.NewClientPipe(clientR, clientW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		clientW.Close()
		<-served
		serverW.Close()
		c.Close()
	})
	return &remoteFS{c: c, node: "web-1"}
}

// TestSCPRecursiveRefusesHostileNames downloads /dir with -r from nodes
// that list names meant to escape the destination. pkg/sftp's client
// skips "." and ".." and keeps path.Base of every other name, so "x/.."
// arrives as "..", "" as ".", "a/b" as "b"; whatever arrives, nothing may
// be written outside the destination, and a name that is not a plain
// file name stops the copy with an error that names it.
func TestSCPRecursiveRefusesHostileNames(t *testing.T) {
	tests := []struct {
		name    string // as the node lists it
		dir     bool
		refused string // the name the error quotes; "" when the entry is harmless
	}{
		{name: "x/..", dir: true, refused: `".."`},
		{name: "x/..", refused: `".."`},
		{name: "x/.", dir: true, refused: `"."`},
		{name: "", refused: `"."`},
		{name: `..\..\evil`, refused: `"..\\..\\evil"`},
		{name: `a\b`, refused: `"a\\b"`},
		{name: "a\x00b", refused: `"a\x00b"`},
		{name: "../../evil", dir: true},
		{name: "../evil"},
		{name: "a/b"},
		{name: ".."},
		{name: "."},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, "/", "∕")+map[bool]string{true: " dir", false: " file"}[tc.dir], func(t *testing.T) {
			root := t.TempDir()
			dest := filepath.Join(root, "in")
			if err := os.Mkdir(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			cp := &copier{ctx: context.Background(), recursive: true, log: &log, local: localFS{},
				remote: serveHostile(t, &hostileNode{name: tc.name, dir: tc.dir})}
			err := cp.copy(cp.remote, "/dir", cp.local, dest)

			// Nothing outside dest/dir, whatever happened.
			inside := filepath.Join(dest, "dir") + string(filepath.Separator)
			werr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if p != root && p != dest && p != filepath.Join(dest, "dir") && !strings.HasPrefix(p, inside) {
					t.Errorf("the copy wrote %s, outside %s", p, filepath.Join(dest, "dir"))
				}
				return nil
			})
			if werr != nil {
				t.Fatal(werr)
			}
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("copy: %v", err)
				}
				return
			}
			want := "refused the entry " + tc.refused + " that remote directory /dir on web-1 lists"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got error %v; want one containing %q", err, want)
			}
		})
	}
}

// TestWithin checks the last guard: a joined path outside its directory
// is refused on both sides, whatever the names were.
func TestWithin(t *testing.T) {
	local := localFS{}
	remote := &remoteFS{node: "web-1"}
	tests := []struct {
		fs          fileSystem
		dir, target string
		want        bool
	}{
		{local, "/tmp/in", "/tmp/in/a", true},
		{local, "/tmp/in", "/tmp/in/a/b", true},
		{local, "/tmp/in", "/tmp/in", false},
		{local, "/tmp/in", "/tmp/in/..", false},
		{local, "/tmp/in", "/tmp/evil", false},
		{local, "/tmp/in", "/tmp/in2/a", false},
		{local, "in", "in/a", true},
		{local, ".", "a", true},
		{local, ".", "../a", false},
		{remote, "www", "www/a", true},
		{remote, "www", "www/../a", false},
		{remote, "www", "wwwx/a", false},
		{remote, ".", "a", true},
		{remote, ".", "..", false},
		{remote, ".", "../a", false},
		{remote, ".", "/etc/passwd", false},
		{remote, "/", "/a", true},
		{remote, "/", "/", false},
		{remote, "/srv/", "/srv/a", true},
	}
	for _, tc := range tests {
		if got := tc.fs.Within(tc.dir, tc.target); got != tc.want {
			t.Errorf("%s Within(%q, %q) = %v; want %v", tc.fs.Kind(), tc.dir, tc.target, got, tc.want)
		}
	}
	if err := within(local, "/tmp/in", "/tmp/evil"); err == nil || err.Error() != "refused to write /tmp/evil: it is outside /tmp/in" {
		t.Errorf("got %v; want the refusal naming the path", err)
	}
}

// TestSCPUploadKeepsLocalBackslashNames: on this machine a backslash is
// an ordinary character of a name; uploading it with -r is not refused.
func TestSCPUploadKeepsLocalBackslashNames(t *testing.T) {
	root := t.TempDir()
	local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
	writeFile(t, filepath.Join(local, "site", `a\b`), "odd", 0o644)
	os.Mkdir(home, 0o755)
	cp, _ := newCopier(t, home, true)
	if err := cp.copy(cp.local, filepath.Join(local, "site"), cp.remote, "."); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(home, "site", `a\b`), "odd", 0o644)
}
