//go:build unix

package sqlitestore

import "syscall"

func setUmask(m int) int { return syscall.Umask(m) }
