package cli

import (
	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
)

func sshAuthorizedKey(k *profile.Key) []byte { return ssh.MarshalAuthorizedKey(k.SSH) }
