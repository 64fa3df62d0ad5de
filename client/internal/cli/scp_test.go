package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pkg/sftp"
)

func TestParseSCPArgs(t *testing.T) {
	remote := func(login, node, p string) scpEndpoint {
		return scpEndpoint{Remote: true, Login: login, Node: node, Path: p}
	}
	local := func(p string) scpEndpoint { return scpEndpoint{Path: p} }
	tests := []struct {
		name     string
		args     []string
		wantSrcs []scpEndpoint
		wantDst  scpEndpoint
		wantErr  string
	}{
		{name: "local to remote", args: []string{"./app.tar.gz", "deploy@web-1:/tmp/"},
			wantSrcs: []scpEndpoint{local("./app.tar.gz")}, wantDst: remote("deploy", "web-1", "/tmp/")},
		{name: "remote to local", args: []string{"ubuntu@web-1:/var/log/syslog", "."},
			wantSrcs: []scpEndpoint{remote("ubuntu", "web-1", "/var/log/syslog")}, wantDst: local(".")},
		{name: "relative remote path", args: []string{"ubuntu@web-1:notes.txt", "/tmp/notes.txt"},
			wantSrcs: []scpEndpoint{remote("ubuntu", "web-1", "notes.txt")}, wantDst: local("/tmp/notes.txt")},
		{name: "remote home", args: []string{"f", "ubuntu@web-1:"},
			wantSrcs: []scpEndpoint{local("f")}, wantDst: remote("ubuntu", "web-1", ".")},
		{name: "tilde", args: []string{"f", "ubuntu@web-1:~/dir/f"},
			wantSrcs: []scpEndpoint{local("f")}, wantDst: remote("ubuntu", "web-1", "dir/f")},
		{name: "colon after slash is local", args: []string{"./a:b", "ubuntu@web-1:/tmp"},
			wantSrcs: []scpEndpoint{local("./a:b")}, wantDst: remote("ubuntu", "web-1", "/tmp")},
		{name: "several local sources", args: []string{"a", "./b", "/c/d", "deploy@web-1:/srv/"},
			wantSrcs: []scpEndpoint{local("a"), local("./b"), local("/c/d")}, wantDst: remote("deploy", "web-1", "/srv/")},
		{name: "several remote sources", args: []string{"u@web-1:/var/log/a", "u@web-1:b", "u@web-1:~/c", "out"},
			wantSrcs: []scpEndpoint{remote("u", "web-1", "/var/log/a"), remote("u", "web-1", "b"), remote("u", "web-1", "c")}, wantDst: local("out")},
		{name: "both local", args: []string{"a", "/tmp/b"},
			wantErr: "both SRC a and DST /tmp/b are local: one of them must be LOGIN@NODE:PATH"},
		{name: "both remote", args: []string{"a@web-1:/x", "a@web-2:/y"},
			wantErr: "both SRC a@web-1:/x and DST a@web-2:/y are remote"},
		{name: "one of several sources local", args: []string{"u@web-1:/a", "b", "."},
			wantErr: "both SRC b and DST . are local"},
		{name: "one of several sources remote", args: []string{"a", "u@web-1:/b", "u@web-1:/c"},
			wantErr: "both SRC u@web-1:/b and DST u@web-1:/c are remote"},
		{name: "sources on two nodes", args: []string{"u@web-1:/a", "u@web-2:/b", "."},
			wantErr: "the sources are on u@web-1 and u@web-2: copy from one LOGIN@NODE at a time"},
		{name: "sources as two logins", args: []string{"u@web-1:/a", "v@web-1:/b", "."},
			wantErr: "the sources are on u@web-1 and v@web-1"},
		{name: "no login", args: []string{"web-1:/x", "."}, wantErr: `"web-1:/x" is not LOGIN@NODE:PATH`},
		{name: "empty login", args: []string{"@web-1:/x", "."}, wantErr: `"@web-1:/x" is not LOGIN@NODE:PATH`},
		{name: "empty node", args: []string{".", "ubuntu@:/x"}, wantErr: `"ubuntu@:/x" is not LOGIN@NODE:PATH`},
		{name: "two at signs", args: []string{".", "a@b@web-1:/x"}, wantErr: "is not LOGIN@NODE:PATH"},
		{name: "empty", args: []string{"", "a@web-1:/x"}, wantErr: "an empty path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srcs, dst, err := parseSCPArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(srcs, tc.wantSrcs) || dst != tc.wantDst {
				t.Errorf("got %+v, %+v; want %+v, %+v", srcs, dst, tc.wantSrcs, tc.wantDst)
			}
		})
	}
}

func TestSCPCommandArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"scp"}, "tunnel scp takes SRC... DST (got 0 arguments)"},
		{[]string{"scp", "a"}, "tunnel scp takes SRC... DST (got 1 arguments)"},
		{[]string{"scp", "a", "b"}, "both SRC a and DST b are local"},
		{[]string{"scp", "a", "b", "c"}, "both SRC a and DST c are local"},
		{[]string{"scp", "a", "u@web-1:/b", "c"}, "both SRC a and DST c are local"},
		{[]string{"scp", "-r", "u@web-1:/a", "u@web-2:/b"}, "both SRC u@web-1:/a and DST u@web-2:/b are remote"},
		{[]string{"scp", "-q", "u@web-1:/a", "u@web-2:/b", "."}, "the sources are on u@web-1 and u@web-2"},
		{[]string{"scp", "web-1:/a", "."}, "is not LOGIN@NODE:PATH"},
		{[]string{"config", "ssh", "extra"}, `unknown command "extra"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// sftpRemote serves the local file system over SFTP on in-memory pipes,
// with relative paths resolved against home, as a node would.
func sftpRemote(t *testing.T, home string) *remoteFS {
	t.Helper()
	clientR, serverW := io.Pipe()
	serverR, clientW := io.Pipe()
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{serverR, serverW}, sftp.WithServerWorkingDirectory(home))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	c, err := sftp.NewClientPipe(clientR, clientW, sftp.UseConcurrentWrites(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The client's end first, so the server's Serve returns, then the
		// server's, so the client's receive loop ends.
		clientW.Close()
		<-served
		serverW.Close()
		c.Close()
	})
	return &remoteFS{c: c, node: "web-1"}
}

func newCopier(t *testing.T, home string, recursive bool) (*copier, *bytes.Buffer) {
	var log bytes.Buffer
	return &copier{ctx: context.Background(), recursive: recursive, log: &log,
		local: localFS{}, remote: sftpRemote(t, home)}, &log
}

func writeFile(t *testing.T, name, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, name, data string, mode fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != data {
		t.Errorf("%s holds %q; want %q", name, got, data)
	}
	info, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != mode {
		t.Errorf("%s has mode %v; want %v", name, info.Mode().Perm(), mode)
	}
}

// noTemp fails if a temporary file was left in dir.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tunnel-tmp-") {
			t.Errorf("temporary file %s left behind", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSCPFile(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: many SFTP packets
	tests := []struct {
		name     string
		upload   bool
		setup    func(t *testing.T, local, home string) (src, dst string)
		want     string // the copy, relative to local or home
		data     string
		mode     fs.FileMode
		existing bool
	}{
		{name: "upload into directory", upload: true, data: big, mode: 0o640,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(local, "app.tar.gz"), big, 0o640)
				os.Mkdir(filepath.Join(home, "tmp"), 0o755)
				return filepath.Join(local, "app.tar.gz"), filepath.Join(home, "tmp")
			}, want: "home/tmp/app.tar.gz"},
		{name: "upload to relative name", upload: true, data: "#!/bin/sh\n", mode: 0o755,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(local, "run.sh"), "#!/bin/sh\n", 0o755)
				return filepath.Join(local, "run.sh"), "bin-run.sh"
			}, want: "home/bin-run.sh"},
		{name: "upload to home", upload: true, data: "x", mode: 0o600,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(local, "x"), "x", 0o600)
				return filepath.Join(local, "x"), "."
			}, want: "home/x"},
		{name: "upload replaces a file", upload: true, data: "new", mode: 0o644, existing: true,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(local, "conf"), "new", 0o644)
				writeFile(t, filepath.Join(home, "conf"), "old contents", 0o600)
				return filepath.Join(local, "conf"), "conf"
			}, want: "home/conf"},
		{name: "download into directory", data: big, mode: 0o750,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(home, "var/log/syslog"), big, 0o750)
				return "var/log/syslog", local
			}, want: "local/syslog"},
		{name: "download replaces a file", data: "new", mode: 0o444, existing: true,
			setup: func(t *testing.T, local, home string) (string, string) {
				writeFile(t, filepath.Join(home, "conf"), "new", 0o444)
				writeFile(t, filepath.Join(local, "conf"), "old contents", 0o600)
				return filepath.Join(home, "conf"), filepath.Join(local, "conf")
			}, want: "local/conf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
			os.Mkdir(local, 0o755)
			os.Mkdir(home, 0o755)
			src, dst := tc.setup(t, local, home)
			cp, log := newCopier(t, home, false)
			var err error
			if tc.upload {
				err = cp.copy(cp.local, src, cp.remote, dst)
			} else {
				err = cp.copy(cp.remote, src, cp.local, dst)
			}
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, filepath.Join(root, tc.want), tc.data, tc.mode)
			noTemp(t, root)
			if !strings.Contains(log.String(), " -> ") {
				t.Errorf("verbose log %q lacks the file copied", log.String())
			}
		})
	}
}

func TestSCPRecursive(t *testing.T) {
	tree := map[string]struct {
		data string
		mode fs.FileMode
	}{
		"site/index.html":        {"<h1>hi</h1>", 0o644},
		"site/bin/deploy":        {"#!/bin/sh\n", 0o755},
		"site/private/key":       {"secret", 0o600},
		"site/private/deep/note": {"n", 0o640},
	}
	dirModes := map[string]fs.FileMode{"site": 0o755, "site/bin": 0o750, "site/private": 0o700, "site/private/deep": 0o555}
	build := func(t *testing.T, base string) {
		for name, f := range tree {
			writeFile(t, filepath.Join(base, name), f.data, f.mode)
		}
		os.Symlink("index.html", filepath.Join(base, "site/link.html"))
		os.Symlink("/nonexistent", filepath.Join(base, "site/dangling"))
		for _, d := range []string{"site/private/deep", "site/private", "site/bin", "site"} {
			os.Chmod(filepath.Join(base, d), dirModes[d])
		}
		t.Cleanup(func() { os.Chmod(filepath.Join(base, "site/private/deep"), 0o755) })
	}
	check := func(t *testing.T, base string) {
		t.Helper()
		t.Cleanup(func() { os.Chmod(filepath.Join(base, "site/private/deep"), 0o755) })
		for name, f := range tree {
			checkFile(t, filepath.Join(base, name), f.data, f.mode)
		}
		// A link to a file is copied as the file; a dangling one is skipped.
		checkFile(t, filepath.Join(base, "site/link.html"), "<h1>hi</h1>", 0o644)
		if _, err := os.Lstat(filepath.Join(base, "site/dangling")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("dangling link was copied: %v", err)
		}
		for d, mode := range dirModes {
			info, err := os.Stat(filepath.Join(base, d))
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != mode {
				t.Errorf("%s has mode %v; want %v", d, info.Mode().Perm(), mode)
			}
		}
	}
	t.Run("upload", func(t *testing.T) {
		root := t.TempDir()
		local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
		build(t, local)
		os.Mkdir(home, 0o755)
		cp, _ := newCopier(t, home, true)
		if err := cp.copy(cp.local, filepath.Join(local, "site"), cp.remote, "www"); err != nil {
			t.Fatal(err)
		}
		// www did not exist: it becomes the copy of site.
		os.Rename(filepath.Join(home, "www"), filepath.Join(home, "site"))
		check(t, home)
		noTemp(t, root)
	})
	t.Run("download into directory", func(t *testing.T) {
		root := t.TempDir()
		local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
		build(t, home)
		os.Mkdir(local, 0o755)
		cp, _ := newCopier(t, home, true)
		if err := cp.copy(cp.remote, "site", cp.local, local); err != nil {
			t.Fatal(err)
		}
		check(t, local)
		noTemp(t, root)
	})
}

func TestSCPErrors(t *testing.T) {
	root := t.TempDir()
	local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
	writeFile(t, filepath.Join(local, "f"), "f", 0o644)
	writeFile(t, filepath.Join(home, "dir/g"), "g", 0o644)
	cp, _ := newCopier(t, home, false)
	tests := []struct {
		name   string
		upload bool
		src    string
		dst    string
		want   string
	}{
		{"remote file missing", false, "/x", local, "remote file /x does not exist on web-1"},
		{"local file missing", true, filepath.Join(local, "nope"), "dir", "local file " + filepath.Join(local, "nope") + " does not exist"},
		{"remote directory missing", true, filepath.Join(local, "f"), "nodir/f", "remote directory nodir does not exist on web-1"},
		{"remote trailing slash", true, filepath.Join(local, "f"), "nodir/", "remote directory nodir/ does not exist on web-1"},
		{"local directory missing", false, "dir/g", filepath.Join(local, "nodir/g"), "local directory " + filepath.Join(local, "nodir") + " does not exist"},
		{"directory without -r", false, "dir", local, "remote dir is a directory on web-1: use -r to copy it"},
		{"directory onto a file", true, local, "dir/g", "local " + local + " is a directory: use -r to copy it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.upload {
				err = cp.copy(cp.local, tc.src, cp.remote, tc.dst)
			} else {
				err = cp.copy(cp.remote, tc.src, cp.local, tc.dst)
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("got error %v; want %q", err, tc.want)
			}
		})
	}
	cp.recursive = true
	if err := cp.copy(cp.local, local, cp.remote, "dir/g"); err == nil || !strings.Contains(err.Error(), "cannot copy directory") {
		t.Errorf("got error %v; want cannot copy directory onto a file", err)
	}
}

// breakingFS fails or observes reads of its files half way through.
type breakingFS struct {
	fileSystem
	after  int64
	onRead func() error
}

func (b breakingFS) Open(name string) (io.ReadCloser, error) {
	r, err := b.fileSystem.Open(name)
	if err != nil {
		return nil, err
	}
	return &breakingReader{r: r, left: b.after, on: b.onRead}, nil
}

type breakingReader struct {
	r    io.ReadCloser
	left int64
	on   func() error
}

func (r *breakingReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, r.on()
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= int64(n)
	return n, err
}

func (r *breakingReader) Close() error { return r.r.Close() }

// TestSCPInterrupted checks that a copy that fails half way leaves the
// destination as it was and no temporary file, and that while it runs
// only the temporary name exists.
func TestSCPInterrupted(t *testing.T) {
	data := strings.Repeat("x", 1<<20)
	for _, upload := range []bool{true, false} {
		name := map[bool]string{true: "upload", false: "download"}[upload]
		for _, cancel := range []bool{false, true} {
			t.Run(name+map[bool]string{false: " read error", true: " cancelled"}[cancel], func(t *testing.T) {
				root := t.TempDir()
				local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
				srcDir, dstDir := local, home
				if !upload {
					srcDir, dstDir = home, local
				}
				writeFile(t, filepath.Join(srcDir, "f"), data, 0o644)
				writeFile(t, filepath.Join(dstDir, "old"), "complete old file", 0o644)
				os.MkdirAll(dstDir, 0o755)
				ctx, stop := context.WithCancel(context.Background())
				defer stop()
				cp, _ := newCopier(t, home, false)
				cp.ctx = ctx
				sawTemp := false
				onRead := func() error {
					entries, _ := os.ReadDir(dstDir)
					for _, e := range entries {
						sawTemp = sawTemp || strings.HasPrefix(e.Name(), ".old.tunnel-tmp-")
					}
					got, _ := os.ReadFile(filepath.Join(dstDir, "old"))
					if string(got) != "complete old file" {
						t.Errorf("during the copy the destination holds %d bytes", len(got))
					}
					if cancel {
						stop()
						return nil
					}
					return errors.New("disk on fire")
				}
				var err error
				if upload {
					cp.local = breakingFS{fileSystem: cp.local, after: 100 << 10, onRead: onRead}
					err = cp.copy(cp.local, filepath.Join(local, "f"), cp.remote, "old")
				} else {
					cp.remote = breakingFS{fileSystem: cp.remote, after: 100 << 10, onRead: onRead}
					err = cp.copy(cp.remote, "f", cp.local, filepath.Join(local, "old"))
				}
				want := "disk on fire"
				if cancel {
					want = "interrupted"
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("got error %v; want one containing %q", err, want)
				}
				if !sawTemp {
					t.Error("no temporary file while copying")
				}
				checkFile(t, filepath.Join(dstDir, "old"), "complete old file", 0o644)
				noTemp(t, root)
			})
		}
	}
}

// TestSCPRenameWithoutPosixRename covers servers without the
// posix-rename extension, whose plain rename refuses an existing target.
func TestSCPRenameWithoutPosixRename(t *testing.T) {
	if err := sftp.SetSFTPExtensions("hardlink@openssh.com", "statvfs@openssh.com"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sftp.SetSFTPExtensions("hardlink@openssh.com", "posix-rename@openssh.com", "statvfs@openssh.com")
	})
	root := t.TempDir()
	local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
	writeFile(t, filepath.Join(local, "f"), "new", 0o600)
	writeFile(t, filepath.Join(home, "f"), "old", 0o644)
	cp, _ := newCopier(t, home, false)
	if _, ok := cp.remote.(*remoteFS).c.HasExtension("posix-rename@openssh.com"); ok {
		t.Fatal("server still offers posix-rename")
	}
	if err := cp.copy(cp.local, filepath.Join(local, "f"), cp.remote, "f"); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(home, "f"), "new", 0o600)
	noTemp(t, root)
}

// TestSCPSeveralSources copies several files into a directory both ways,
// and checks that DST must then be an existing directory and that one
// failed source does not stop the others.
func TestSCPSeveralSources(t *testing.T) {
	setup := func(t *testing.T) (root, local, home string) {
		root = t.TempDir()
		local, home = filepath.Join(root, "local"), filepath.Join(root, "home")
		writeFile(t, filepath.Join(local, "a.txt"), "a", 0o644)
		writeFile(t, filepath.Join(local, "sub/b.txt"), "bb", 0o600)
		writeFile(t, filepath.Join(home, "logs/x.log"), "x", 0o640)
		writeFile(t, filepath.Join(home, "y.log"), "yy", 0o644)
		os.Mkdir(filepath.Join(home, "srv"), 0o755)
		os.Mkdir(filepath.Join(local, "out"), 0o755)
		return root, local, home
	}
	t.Run("upload", func(t *testing.T) {
		root, local, home := setup(t)
		cp, _ := newCopier(t, home, false)
		srcs := []scpEndpoint{{Path: filepath.Join(local, "a.txt")}, {Path: filepath.Join(local, "sub/b.txt")}}
		if err := cp.copyAll(srcs, scpEndpoint{Remote: true, Path: "srv"}); err != nil {
			t.Fatal(err)
		}
		checkFile(t, filepath.Join(home, "srv/a.txt"), "a", 0o644)
		checkFile(t, filepath.Join(home, "srv/b.txt"), "bb", 0o600)
		noTemp(t, root)
	})
	t.Run("download", func(t *testing.T) {
		root, local, home := setup(t)
		cp, _ := newCopier(t, home, false)
		srcs := []scpEndpoint{{Remote: true, Path: "logs/x.log"}, {Remote: true, Path: "y.log"}}
		if err := cp.copyAll(srcs, scpEndpoint{Path: filepath.Join(local, "out")}); err != nil {
			t.Fatal(err)
		}
		checkFile(t, filepath.Join(local, "out/x.log"), "x", 0o640)
		checkFile(t, filepath.Join(local, "out/y.log"), "yy", 0o644)
		noTemp(t, root)
	})
	t.Run("one source missing", func(t *testing.T) {
		_, local, home := setup(t)
		var errw bytes.Buffer
		cp, _ := newCopier(t, home, false)
		cp.errw = &errw
		srcs := []scpEndpoint{{Remote: true, Path: "nope.log"}, {Remote: true, Path: "y.log"}}
		err := cp.copyAll(srcs, scpEndpoint{Path: filepath.Join(local, "out")})
		if err == nil || err.Error() != "1 of 2 sources were not copied (see above)" {
			t.Errorf("got error %v; want 1 of 2 sources were not copied", err)
		}
		if got, want := errw.String(), "tunnel: remote file nope.log does not exist on web-1\n"; got != want {
			t.Errorf("reported %q; want %q", got, want)
		}
		checkFile(t, filepath.Join(local, "out/y.log"), "yy", 0o644)
	})
	for _, tc := range []struct {
		name string
		dst  func(local string) scpEndpoint
		want string
	}{
		{"local destination missing", func(l string) scpEndpoint { return scpEndpoint{Path: filepath.Join(l, "nodir")} },
			"local directory %L/nodir does not exist: with several sources DST must be an existing directory"},
		{"local destination a file", func(l string) scpEndpoint { return scpEndpoint{Path: filepath.Join(l, "a.txt")} },
			"local %L/a.txt is not a directory: with several sources DST must be an existing directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, local, home := setup(t)
			cp, _ := newCopier(t, home, false)
			srcs := []scpEndpoint{{Remote: true, Path: "logs/x.log"}, {Remote: true, Path: "y.log"}}
			err := cp.copyAll(srcs, tc.dst(local))
			if want := strings.ReplaceAll(tc.want, "%L", local); err == nil || err.Error() != want {
				t.Errorf("got error %v; want %q", err, want)
			}
		})
	}
	t.Run("remote destination a file", func(t *testing.T) {
		_, local, home := setup(t)
		cp, _ := newCopier(t, home, false)
		srcs := []scpEndpoint{{Path: filepath.Join(local, "a.txt")}, {Path: filepath.Join(local, "sub/b.txt")}}
		err := cp.copyAll(srcs, scpEndpoint{Remote: true, Path: "y.log"})
		if want := "remote y.log is not a directory on web-1: with several sources DST must be an existing directory"; err == nil || err.Error() != want {
			t.Errorf("got error %v; want %q", err, want)
		}
	})
}
