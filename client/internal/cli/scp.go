package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"github.com/spf13/cobra"
)

func newSCPCmd(env Env) *cobra.Command {
	var (
		ttl       time.Duration
		recursive bool
		verbose   bool
		quiet     bool
	)
	cmd := &cobra.Command{
		Use:   "scp [--ttl D] [-r] [-v] [-q] SRC... DST",
		Short: "Copy files to or from a node over a time-limited bastion session",
		Long: `scp copies files (with -r, directory trees) between this machine and a
node. Either DST is remote and every SRC is local, or DST is local and
every SRC is remote on one node; remote paths are written LOGIN@NODE:PATH.
A relative PATH (or one starting with ~/) is relative to LOGIN's home
directory, and LOGIN@NODE: alone is that home directory. Like tunnel ssh,
it opens a bastion session for LOGIN on NODE (--ttl, at most what your
role allows) and closes it when the copy ends; the bytes travel over the
node's SFTP subsystem.

Each file keeps its permission bits. It is written under a temporary name
next to its destination and renamed into place only once complete, so an
interrupted copy never leaves a truncated file under the real name. When
DST is an existing directory, each SRC is copied into it; with several
SRCs it must be one. When one SRC fails, the others are still copied and
scp exits non-zero. Names a node lists for -r are checked: one that is
not a plain file name (.., a/b) is refused, so a node cannot write
outside DST.

On a terminal, scp shows each file's progress on stderr (name, bytes,
percent, rate); -q hides it. Otherwise it prints nothing when it
succeeds; -v lists each file copied (on stderr). A local file name
holding a colon is written ./NAME so it is not taken for a remote one.`,
		Example: `  tunnel scp ./app.tar.gz deploy@web-1:/tmp/
  tunnel scp ./app.tar.gz ./app.env deploy@web-1:/srv/app/
  tunnel scp ubuntu@web-1:/var/log/syslog ubuntu@web-1:/var/log/auth.log .
  tunnel scp -r ./site deploy@web-1:www`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("%s takes SRC... DST (got %d arguments); see %s --help", cmd.CommandPath(), len(args), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, dst, err := parseSCPArgs(args)
			if err != nil {
				return err
			}
			remote := dst
			if !remote.Remote {
				remote = srcs[0]
			}
			ctx := cmd.Context()
			c, closeSSH, err := openSSH(ctx, cmd, env, remote.Node, remote.Login, ttl)
			if err != nil {
				return err
			}
			sc, err := sftp.NewClient(c, sftp.UseConcurrentWrites(true))
			if err != nil {
				closeSSH()
				return fmt.Errorf("start SFTP on %s: %w", remote.Node, err)
			}
			var once sync.Once
			closeAll := func() { once.Do(func() { sc.Close(); closeSSH() }) }
			defer closeAll()
			// On an interrupt the copy stops at its next read or write and
			// removes its temporary file; should the connection hang
			// instead, it is closed after a grace period.
			stop := context.AfterFunc(ctx, func() { time.AfterFunc(3*time.Second, closeAll) })
			defer stop()

			cp := &copier{ctx: ctx, recursive: recursive, local: localFS{}, remote: &remoteFS{c: sc, node: remote.Node},
				errw: env.Stderr, progress: newProgress(env.Stderr, env.Now, quiet)}
			if verbose {
				cp.log = env.Stderr
			}
			return cp.copyAll(srcs, dst)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session length (default 1h, at most what your role and your login allow)")
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy directories and everything in them")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list each file copied on stderr")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress line on a terminal")
	return cmd
}

// scpEndpoint is one side of a copy: a local path, or PATH on NODE as
// LOGIN.
type scpEndpoint struct {
	Remote      bool
	Login, Node string
	Path        string
}

// parseSCPArg reads a local path or LOGIN@NODE:PATH. As with OpenSSH's
// scp, an argument is remote when it has a colon before any slash.
func parseSCPArg(arg string) (scpEndpoint, error) {
	if arg == "" {
		return scpEndpoint{}, errors.New("an empty path is neither a local file nor LOGIN@NODE:PATH")
	}
	colon := strings.IndexByte(arg, ':')
	if colon < 0 || strings.Contains(arg[:colon], "/") {
		return scpEndpoint{Path: arg}, nil
	}
	login, node, ok := strings.Cut(arg[:colon], "@")
	if !ok || login == "" || node == "" || strings.Contains(node, "@") {
		return scpEndpoint{}, fmt.Errorf("%q is not LOGIN@NODE:PATH (for example ubuntu@web-1:/tmp/file; write a local name holding a colon as ./%s)", arg, arg)
	}
	p := arg[colon+1:]
	switch {
	case p == "" || p == "~":
		p = "."
	case strings.HasPrefix(p, "~/"):
		// SFTP resolves relative paths against the login's home.
		p = strings.TrimLeft(p[2:], "/")
		if p == "" {
			p = "."
		}
	}
	return scpEndpoint{Remote: true, Login: login, Node: node, Path: p}, nil
}

// parseSCPArgs reads SRC... DST: either DST is remote and every SRC
// local, or DST is local and every SRC remote on one LOGIN@NODE (one
// session carries the copy).
func parseSCPArgs(args []string) ([]scpEndpoint, scpEndpoint, error) {
	if len(args) < 2 {
		return nil, scpEndpoint{}, errors.New("tunnel scp takes SRC... DST")
	}
	d, err := parseSCPArg(args[len(args)-1])
	if err != nil {
		return nil, d, err
	}
	srcs := make([]scpEndpoint, 0, len(args)-1)
	for _, a := range args[:len(args)-1] {
		s, err := parseSCPArg(a)
		if err != nil {
			return nil, d, err
		}
		switch {
		case !s.Remote && !d.Remote:
			return nil, d, fmt.Errorf("both SRC %s and DST %s are local: one of them must be LOGIN@NODE:PATH", a, args[len(args)-1])
		case s.Remote && d.Remote:
			return nil, d, fmt.Errorf("both SRC %s and DST %s are remote: one of them must be a local path (copying between nodes is not supported)", a, args[len(args)-1])
		case s.Remote && len(srcs) > 0 && (s.Login != srcs[0].Login || s.Node != srcs[0].Node):
			return nil, d, fmt.Errorf("the sources are on %s@%s and %s@%s: copy from one LOGIN@NODE at a time", srcs[0].Login, srcs[0].Node, s.Login, s.Node)
		}
		srcs = append(srcs, s)
	}
	return srcs, d, nil
}

// fileSystem is one side of a copy: this machine or a node over SFTP.
type fileSystem interface {
	// Kind is "local" or "remote"; Where is "" or " on NODE". Together
	// they make messages like "remote file /x does not exist on web-1".
	Kind() string
	Where() string
	Stat(name string) (fs.FileInfo, error) // follows symbolic links
	// ReadDir lists a directory sorted by name, without following links.
	ReadDir(name string) ([]fs.FileInfo, error)
	Open(name string) (io.ReadCloser, error)
	// CreateTemp creates a new file in dir, readable only by its owner.
	CreateTemp(dir, prefix string) (tempFile, string, error)
	Mkdir(name string) error
	Chmod(name string, mode fs.FileMode) error
	// Rename moves oldname to newname, replacing a file there.
	Rename(oldname, newname string) error
	Remove(name string) error
	Abs(name string) (string, error)
	Join(dir, name string) string
	Dir(name string) string
	Base(name string) string
	// Within says whether target is inside dir (and not dir itself).
	Within(dir, target string) bool
}

// tempFile is a file being written under its temporary name.
type tempFile interface {
	io.Writer
	Chmod(mode fs.FileMode) error
	Sync() error
	Close() error
}

// copier copies between a local and a remote fileSystem.
type copier struct {
	ctx           context.Context
	recursive     bool
	log           io.Writer // nil: quiet
	errw          io.Writer // where a failed source of several is reported; nil: discarded
	progress      *progress // nil: no progress line
	local, remote fileSystem
}

// copyAll copies every SRC to DST (one of the two sides is remote, as
// parseSCPArgs checked). With several sources DST must be an existing
// directory; a source that fails is reported and the others are copied.
func (c *copier) copyAll(srcs []scpEndpoint, dst scpEndpoint) error {
	sfs, dfs := c.local, c.remote
	if !dst.Remote {
		sfs, dfs = c.remote, c.local
	}
	if len(srcs) == 1 {
		return c.copy(sfs, srcs[0].Path, dfs, dst.Path)
	}
	info, err := dfs.Stat(dst.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s directory %s does not exist%s: with several sources DST must be an existing directory", dfs.Kind(), dst.Path, dfs.Where())
	case err != nil:
		return fsError(dfs, "read", dst.Path, err)
	case !info.IsDir():
		return fmt.Errorf("%s %s is not a directory%s: with several sources DST must be an existing directory", dfs.Kind(), dst.Path, dfs.Where())
	}
	failed := 0
	for _, s := range srcs {
		err := c.copy(sfs, s.Path, dfs, dst.Path)
		if err == nil {
			continue
		}
		if c.ctx.Err() != nil {
			return err
		}
		failed++
		if c.errw != nil {
			fmt.Fprintf(c.errw, "tunnel: %v\n", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d sources were not copied (see above)", failed, len(srcs))
	}
	return nil
}

// copy copies src on sfs to dst on dfs, with scp's rules: into dst when
// it is an existing directory, else to dst itself.
func (c *copier) copy(sfs fileSystem, src string, dfs fileSystem, dst string) error {
	info, err := sfs.Stat(src)
	if err != nil {
		return fsError(sfs, "read", src, err)
	}
	if err := c.copyable(sfs, src, info); err != nil {
		return err
	}
	target := dst
	dinfo, err := dfs.Stat(dst)
	switch {
	case err == nil && dinfo.IsDir():
		abs, err := sfs.Abs(src)
		if err != nil {
			return fsError(sfs, "resolve", src, err)
		}
		name := sfs.Base(abs)
		if name == "" || name == "/" || name == string(filepath.Separator) || name == "." || name == ".." {
			return fmt.Errorf("%s %s has no name to copy into %s: name the destination", sfs.Kind(), src, dst)
		}
		// The name comes from the source's side (a remote RealPath).
		if err := checkEntryName(sfs, sfs.Dir(abs), name); err != nil {
			return err
		}
		target = dfs.Join(dst, name)
		if err := within(dfs, dst, target); err != nil {
			return err
		}
	case err == nil && info.IsDir():
		return fmt.Errorf("cannot copy directory %s onto %s file %s%s", src, dfs.Kind(), dst, dfs.Where())
	case err == nil:
		// An existing file: replaced.
	case errors.Is(err, fs.ErrNotExist):
		if strings.HasSuffix(dst, "/") {
			return fmt.Errorf("%s directory %s does not exist%s", dfs.Kind(), dst, dfs.Where())
		}
		parent := dfs.Dir(dst)
		pinfo, err := dfs.Stat(parent)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s directory %s does not exist%s", dfs.Kind(), parent, dfs.Where())
		} else if err != nil {
			return fsError(dfs, "read", parent, err)
		} else if !pinfo.IsDir() {
			return fmt.Errorf("%s %s is not a directory%s", dfs.Kind(), parent, dfs.Where())
		}
	default:
		return fsError(dfs, "read", dst, err)
	}
	return c.copyTree(sfs, src, info, dfs, target)
}

// copyable refuses what cannot be copied: a directory without -r, and
// anything that is neither a file nor a directory.
func (c *copier) copyable(sfs fileSystem, name string, info fs.FileInfo) error {
	switch {
	case info.IsDir() && !c.recursive:
		return fmt.Errorf("%s %s is a directory%s: use -r to copy it", sfs.Kind(), name, sfs.Where())
	case !info.IsDir() && !info.Mode().IsRegular():
		return fmt.Errorf("%s %s is not a regular file%s", sfs.Kind(), name, sfs.Where())
	}
	return nil
}

func (c *copier) copyTree(sfs fileSystem, src string, info fs.FileInfo, dfs fileSystem, dst string) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if !info.IsDir() {
		return c.copyFile(sfs, src, info, dfs, dst)
	}
	created := false
	switch dinfo, err := dfs.Stat(dst); {
	case errors.Is(err, fs.ErrNotExist):
		if err := dfs.Mkdir(dst); err != nil {
			return fsError(dfs, "create directory", dst, err)
		}
		created = true
	case err != nil:
		return fsError(dfs, "read", dst, err)
	case !dinfo.IsDir():
		return fmt.Errorf("cannot copy directory %s onto %s file %s%s", src, dfs.Kind(), dst, dfs.Where())
	}
	entries, err := sfs.ReadDir(src)
	if err != nil {
		return fsError(sfs, "list", src, err)
	}
	for _, e := range entries {
		// The listing comes from the source's side: a node could list
		// "..", "../x" or "a/b" to have us write outside dst.
		if err := checkEntryName(sfs, src, e.Name()); err != nil {
			return err
		}
		target := dfs.Join(dst, e.Name())
		if err := within(dfs, dst, target); err != nil {
			return err
		}
		name := sfs.Join(src, e.Name())
		if e.Mode()&fs.ModeSymlink != 0 {
			target, err := sfs.Stat(name)
			if err != nil || !target.Mode().IsRegular() {
				c.warnf("skipping %s symbolic link %s%s: it does not point to a regular file", sfs.Kind(), name, sfs.Where())
				continue
			}
			e = target
		}
		if !e.IsDir() && !e.Mode().IsRegular() {
			c.warnf("skipping %s %s%s: not a regular file or directory", sfs.Kind(), name, sfs.Where())
			continue
		}
		if err := c.copyTree(sfs, name, e, dfs, target); err != nil {
			return err
		}
	}
	// The mode comes last, so a read-only directory can be filled first.
	if created {
		if err := dfs.Chmod(dst, info.Mode().Perm()); err != nil {
			return fsError(dfs, "set the mode of", dst, err)
		}
	}
	return nil
}

// copyFile writes src to a temporary file next to dst and renames it to
// dst once complete, so dst is never a partial copy.
func (c *copier) copyFile(sfs fileSystem, src string, info fs.FileInfo, dfs fileSystem, dst string) (err error) {
	if dinfo, err := dfs.Stat(dst); err == nil && dinfo.IsDir() {
		return fmt.Errorf("cannot replace %s directory %s%s with file %s", dfs.Kind(), dst, dfs.Where(), src)
	}
	r, err := sfs.Open(src)
	if err != nil {
		return fsError(sfs, "open", src, err)
	}
	defer r.Close()
	w, tmp, err := dfs.CreateTemp(dfs.Dir(dst), "."+dfs.Base(dst)+".tunnel-tmp-")
	if err != nil {
		return fsError(dfs, "create a file in", dfs.Dir(dst), err)
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				w.Close()
			}
			_ = dfs.Remove(tmp)
		}
	}()
	c.progress.begin(sfs.Base(src), info.Size())
	n, err := copyData(c.ctx, w, r, c.progress.add)
	c.progress.end()
	if err != nil {
		if c.ctx.Err() != nil {
			return fmt.Errorf("copy of %s interrupted: %s%s was left as it was", src, dst, dfs.Where())
		}
		return fmt.Errorf("copy %s to %s%s: %w", src, dst, dfs.Where(), plainError(err))
	}
	if err := w.Sync(); err != nil {
		return fsError(dfs, "write", dst, err)
	}
	if err := w.Chmod(info.Mode().Perm()); err != nil {
		return fsError(dfs, "set the mode of", dst, err)
	}
	closed = true
	if err := w.Close(); err != nil {
		return fsError(dfs, "write", dst, err)
	}
	if err := dfs.Rename(tmp, dst); err != nil {
		return fsError(dfs, "replace", dst, err)
	}
	if c.log != nil {
		fmt.Fprintf(c.log, "%s%s -> %s%s (%d bytes)\n", src, sfs.Where(), dst, dfs.Where(), n)
	}
	return nil
}

func (c *copier) warnf(format string, a ...any) {
	w := c.log
	if w == nil {
		w = io.Discard
	}
	fmt.Fprintf(w, "warning: "+format+"\n", a...)
}

// copyData copies r to w, stopping when ctx ends, and tells count each
// chunk copied. It keeps pkg/sftp's pipelined paths: ReadFrom on a remote
// destination, WriteTo on a remote source.
func copyData(ctx context.Context, w io.Writer, r io.Reader, count func(int64)) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(ctxReader{ctx, r, count})
	}
	if wt, ok := r.(io.WriterTo); ok {
		return wt.WriteTo(ctxWriter{ctx, w, count})
	}
	return io.Copy(ctxWriter{ctx, w, count}, ctxReader{ctx, r, nil})
}

type ctxReader struct {
	ctx   context.Context
	r     io.Reader
	count func(int64) // nil: not counted here
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if r.count != nil {
		r.count(int64(n))
	}
	return n, err
}

type ctxWriter struct {
	ctx   context.Context
	w     io.Writer
	count func(int64)
}

func (w ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := w.w.Write(p)
	if w.count != nil {
		w.count(int64(n))
	}
	return n, err
}

// checkEntryName refuses a name from sfs's listing of dir that is not a
// plain file name: empty, ".", "..", or holding a slash, NUL or (from a
// node) a backslash. Joined onto the destination, such a name could point
// outside it (the class of OpenSSH's CVE-2019-6111), so the copy stops.
// This machine's own listing cannot hold most of these; a backslash in a
// local name is an ordinary character on Unix and is copied as is.
func checkEntryName(sfs fileSystem, dir, name string) error {
	bad := ""
	switch {
	case name == "":
		bad = "it is empty"
	case name == "." || name == "..":
		bad = "it names a directory, not an entry"
	case strings.Contains(name, "/"), sfs.Kind() == "remote" && strings.Contains(name, "\\"):
		bad = "it holds a path separator"
	case strings.ContainsRune(name, 0):
		bad = "it holds a NUL byte"
	}
	if bad == "" {
		return nil
	}
	return fmt.Errorf("refused the entry %q that %s directory %s%s lists: %s, so it could point outside the destination; nothing more was copied", name, sfs.Kind(), dir, sfs.Where(), bad)
}

// within checks that target, joined from dir and a checked name, is still
// inside dir.
func within(dfs fileSystem, dir, target string) error {
	if !dfs.Within(dir, target) {
		return fmt.Errorf("refused to write %s%s: it is outside %s", target, dfs.Where(), dir)
	}
	return nil
}

// fsError makes a one-line message for a failed operation on name.
func fsError(f fileSystem, op, name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s file %s does not exist%s", f.Kind(), name, f.Where())
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot %s %s file %s%s: permission denied", op, f.Kind(), name, f.Where())
	}
	return fmt.Errorf("cannot %s %s file %s%s: %w", op, f.Kind(), name, f.Where(), plainError(err))
}

// plainError drops the path an *fs.PathError repeats.
func plainError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// localFS is this machine's file system.
type localFS struct{}

func (localFS) Kind() string                           { return "local" }
func (localFS) Where() string                          { return "" }
func (localFS) Stat(name string) (fs.FileInfo, error)  { return os.Stat(name) }
func (localFS) Mkdir(name string) error                { return os.Mkdir(name, 0o700) }
func (localFS) Chmod(name string, m fs.FileMode) error { return os.Chmod(name, m) }
func (localFS) Rename(oldname, newname string) error   { return os.Rename(oldname, newname) }
func (localFS) Remove(name string) error               { return os.Remove(name) }
func (localFS) Abs(name string) (string, error)        { return filepath.Abs(name) }
func (localFS) Join(dir, name string) string           { return filepath.Join(dir, name) }
func (localFS) Dir(name string) string                 { return filepath.Dir(name) }
func (localFS) Base(name string) string                { return filepath.Base(name) }

func (localFS) Within(dir, target string) bool {
	rel, err := filepath.Rel(dir, target)
	return err == nil && rel != "." && filepath.IsLocal(rel)
}

func (localFS) ReadDir(name string) ([]fs.FileInfo, error) {
	entries, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	infos := make([]fs.FileInfo, 0, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Open hides *os.File's ReadFrom and WriteTo, so copyData picks the
// remote side's pipelined path.
func (localFS) Open(name string) (io.ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{f, f}, nil
}

func (localFS) CreateTemp(dir, prefix string) (tempFile, string, error) {
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return nil, "", err
	}
	return localTemp{f}, f.Name(), nil
}

type localTemp struct{ f *os.File }

func (t localTemp) Write(p []byte) (int, error) { return t.f.Write(p) }
func (t localTemp) Chmod(m fs.FileMode) error   { return t.f.Chmod(m) }
func (t localTemp) Sync() error                 { return t.f.Sync() }
func (t localTemp) Close() error                { return t.f.Close() }

// remoteFS is a node's file system over SFTP. Relative paths are relative
// to the login's home directory.
type remoteFS struct {
	c    *sftp.Client
	node string
}

func (r *remoteFS) Kind() string                           { return "remote" }
func (r *remoteFS) Where() string                          { return " on " + r.node }
func (r *remoteFS) Stat(name string) (fs.FileInfo, error)  { return r.c.Stat(name) }
func (r *remoteFS) Mkdir(name string) error                { return r.c.Mkdir(name) }
func (r *remoteFS) Chmod(name string, m fs.FileMode) error { return r.c.Chmod(name, m) }
func (r *remoteFS) Remove(name string) error               { return r.c.Remove(name) }
func (r *remoteFS) Abs(name string) (string, error)        { return r.c.RealPath(name) }
func (r *remoteFS) Join(dir, name string) string           { return path.Join(dir, name) }
func (r *remoteFS) Dir(name string) string                 { return path.Dir(name) }
func (r *remoteFS) Base(name string) string                { return path.Base(name) }

func (r *remoteFS) Within(dir, target string) bool {
	d, t := path.Clean(dir), path.Clean(target)
	switch d {
	case ".":
		return t != "." && t != ".." && !strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "../")
	case "/":
		return t != "/" && strings.HasPrefix(t, "/")
	}
	return strings.HasPrefix(t, d+"/")
}

func (r *remoteFS) ReadDir(name string) ([]fs.FileInfo, error) {
	infos, err := r.c.ReadDir(name)
	if err != nil {
		return nil, err
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name() < infos[j].Name() })
	return infos, nil
}

func (r *remoteFS) Open(name string) (io.ReadCloser, error) { return r.c.Open(name) }

func (r *remoteFS) CreateTemp(dir, prefix string) (tempFile, string, error) {
	name := path.Join(dir, prefix+randomSuffix())
	f, err := r.c.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return nil, "", err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		_ = r.c.Remove(name)
		return nil, "", err
	}
	return remoteTemp{f}, name, nil
}

// Rename replaces newname: with posix-rename where the server has it
// (OpenSSH, pkg/sftp), else by removing newname first, since plain SFTP
// rename refuses an existing target.
func (r *remoteFS) Rename(oldname, newname string) error {
	if _, ok := r.c.HasExtension("posix-rename@openssh.com"); ok {
		return r.c.PosixRename(oldname, newname)
	}
	err := r.c.Rename(oldname, newname)
	if err == nil {
		return nil
	}
	if _, serr := r.c.Stat(newname); serr != nil {
		return err
	}
	if err := r.c.Remove(newname); err != nil {
		return err
	}
	return r.c.Rename(oldname, newname)
}

type remoteTemp struct{ f *sftp.File }

func (t remoteTemp) Write(p []byte) (int, error) { return t.f.Write(p) }
func (t remoteTemp) Chmod(m fs.FileMode) error   { return t.f.Chmod(m) }
func (t remoteTemp) Close() error                { return t.f.Close() }

// ReadFrom pipelines the writes (many requests in flight), which matters
// on a long round trip. A failed copy is removed, so the holes concurrent
// writes may leave do not matter.
func (t remoteTemp) ReadFrom(r io.Reader) (int64, error) { return t.f.ReadFromWithConcurrency(r, 0) }

// Sync asks the server to flush the file where it can (fsync@openssh.com).
func (t remoteTemp) Sync() error {
	err := t.f.Sync()
	var se *sftp.StatusError
	if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported {
		return nil
	}
	return err
}
