//go:build !unix

package sqlitestore

func setUmask(m int) int { return 0 }
