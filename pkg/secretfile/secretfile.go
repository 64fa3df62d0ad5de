// Package secretfile reads secrets that scripts hand to the tunnel
// commands: from a file (--password-file F) or an environment variable,
// never only from an interactive prompt.
package secretfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// MaxSize bounds a secret file.
const MaxSize = 4096

// Read returns the contents of path without its trailing line break. "-"
// reads standard input.
func Read(path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = readAll(os.Stdin)
	} else {
		var f *os.File
		f, err = os.Open(path)
		if err != nil {
			return "", fmt.Errorf("read secret: %w", err)
		}
		defer f.Close()
		b, err = readAll(f)
	}
	if err != nil {
		return "", fmt.Errorf("read secret from %s: %w", path, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("read secret: %s is empty", path)
	}
	return s, nil
}

func readAll(f *os.File) ([]byte, error) {
	b := make([]byte, MaxSize+1)
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil {
			break
		}
	}
	if n > MaxSize {
		return nil, errors.New("larger than 4 KiB; is this the right file?")
	}
	return b[:n], nil
}
