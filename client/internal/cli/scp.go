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
	)
	cmd := &cobra.Command{
		Use:   "scp [--ttl D] [-r] [-v] SRC DST",
		Short: "Copy files to or from a node over a time-limited bastion session",
		Long: `scp copies a file (with -r, a directory tree) between this machine and a
node. Exactly one of SRC and DST is remote, written LOGIN@NODE:PATH; a
relative PATH (or one starting with ~/) is relative to LOGIN's home
directory, and LOGIN@NODE: alone is that home directory. Like tunnel ssh,
it opens a bastion session for LOGIN on NODE (--ttl, at most what your
role allows) and closes it when the copy ends; the bytes travel over the
node's SFTP subsystem.

Each file keeps its permission bits. It is written under a temporary name
next to its destination and renamed into place only once complete, so an
interrupted copy never leaves a truncated file under the real name. When
DST is an existing directory, SRC is copied into it.

scp prints nothing when it succeeds; -v lists each file copied (on stderr).
A local file name holding a colon is written ./NAME so it is not taken
for a remote one.`,
		Example: `  tunnel scp ./app.tar.gz deploy@web-1:/tmp/
  tunnel scp ubuntu@web-1:/var/log/syslog .
  tunnel scp -r ./site deploy@web-1:www`,
		Args: exactArgs(2, "SRC DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst, err := parseSCPArgs(args[0], args[1])
			if err != nil {
				return err
			}
			remote := src
			if !remote.Remote {
				remote = dst
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

			cp := &copier{ctx: ctx, recursive: recursive, local: localFS{}, remote: &remoteFS{c: sc, node: remote.Node}}
			if verbose {
				cp.log = env.Stderr
			}
			if src.Remote {
				return cp.copy(cp.remote, src.Path, cp.local, dst.Path)
			}
			return cp.copy(cp.local, src.Path, cp.remote, dst.Path)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session length (default 1h, at most what your role and your login allow)")
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy directories and everything in them")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list each file copied on stderr")
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

// parseSCPArgs reads SRC and DST, exactly one of which must be remote.
func parseSCPArgs(src, dst string) (scpEndpoint, scpEndpoint, error) {
	s, err := parseSCPArg(src)
	if err != nil {
		return s, scpEndpoint{}, err
	}
	d, err := parseSCPArg(dst)
	if err != nil {
		return s, d, err
	}
	switch {
	case !s.Remote && !d.Remote:
		return s, d, errors.New("both SRC and DST are local: one of them must be LOGIN@NODE:PATH")
	case s.Remote && d.Remote:
		return s, d, errors.New("both SRC and DST are remote: one of them must be a local path (copying between nodes is not supported)")
	}
	return s, d, nil
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
	local, remote fileSystem
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
		target = dfs.Join(dst, name)
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
		if err := c.copyTree(sfs, name, e, dfs, dfs.Join(dst, e.Name())); err != nil {
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
	n, err := copyData(c.ctx, w, r)
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

// copyData copies r to w, stopping when ctx ends. It keeps pkg/sftp's
// pipelined paths: ReadFrom on a remote destination, WriteTo on a remote
// source.
func copyData(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(ctxReader{ctx, r})
	}
	if wt, ok := r.(io.WriterTo); ok {
		return wt.WriteTo(ctxWriter{ctx, w})
	}
	return io.Copy(ctxWriter{ctx, w}, ctxReader{ctx, r})
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
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
