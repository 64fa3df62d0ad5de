package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func authorizedKey(t testing.TB, pub crypto.PublicKey, comment string) []byte {
	t.Helper()
	line := bytes.TrimSuffix(ssh.MarshalAuthorizedKey(newSSHKey(t, pub)), []byte("\n"))
	if comment != "" {
		line = append(line, " "+comment...)
	}
	return line
}

func TestParseSSHPublicKey(t *testing.T) {
	edPub, _ := newEd25519(t)
	ecPub := &newECDSA(t, elliptic.P256()).PublicKey
	edLine := authorizedKey(t, edPub, "alice@laptop")
	ecLine := authorizedKey(t, ecPub, "")
	a := newTestAuthority(t)
	cert, err := a.IssueSSHUser(SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: newSSHKey(t, edPub)})
	if err != nil {
		t.Fatal(err)
	}
	certLine := ssh.MarshalAuthorizedKey(cert)
	edBlob := strings.Fields(string(edLine))[1]

	tests := []struct {
		name     string
		in       []byte
		want     error
		wantType string
	}{
		{name: "ed25519 with comment", in: edLine, wantType: ssh.KeyAlgoED25519},
		{name: "ed25519 with newline", in: append(bytes.Clone(edLine), '\n'), wantType: ssh.KeyAlgoED25519},
		{name: "ed25519 with CRLF and spaces", in: append(append([]byte("  "), edLine...), "\r\n"...), wantType: ssh.KeyAlgoED25519},
		{name: "ecdsa P-256", in: ecLine, wantType: ssh.KeyAlgoECDSA256},
		{name: "RSA", in: authorizedKey(t, &testRSAKey().PublicKey, "x"), want: ErrUnsupportedKey},
		{name: "ecdsa P-384", in: authorizedKey(t, &newECDSA(t, elliptic.P384()).PublicKey, ""), want: ErrUnsupportedKey},
		{name: "certificate", in: certLine, want: ErrUnsupportedKey},
		{name: "options", in: append([]byte(`command="/bin/sh" `), edLine...), want: ErrInvalidRequest},
		{name: "two keys", in: append(append(append(bytes.Clone(edLine), '\n'), ecLine...), '\n'), want: ErrInvalidRequest},
		{name: "comment line first", in: append([]byte("# my key\n"), edLine...), want: ErrInvalidRequest},
		{name: "type does not match key", in: []byte("ssh-rsa " + edBlob), want: ErrInvalidRequest},
		{name: "truncated base64", in: []byte("ssh-ed25519 " + edBlob[:20]), want: ErrInvalidRequest},
		{name: "empty", in: nil, want: ErrInvalidRequest},
		{name: "blank", in: []byte(" \n\t"), want: ErrInvalidRequest},
		{name: "garbage", in: []byte("hello world"), want: ErrInvalidRequest},
		{name: "binary", in: []byte{0, 1, 2, 0xff, 0xfe}, want: ErrInvalidRequest},
		{name: "oversize", in: append(bytes.Clone(edLine), " "+strings.Repeat("c", MaxAuthorizedKeySize)...), want: ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ParseSSHPublicKey(tt.in)
			checkErr(t, err, tt.want)
			if err != nil {
				if pub != nil {
					t.Errorf("got key %v with error; want nil", pub)
				}
				if !strings.HasPrefix(err.Error(), "parse SSH public key: ") {
					t.Errorf("got error %q; want it to name the operation", err)
				}
				return
			}
			if got := pub.Type(); got != tt.wantType {
				t.Errorf("type = %q; want %q", got, tt.wantType)
			}
		})
	}

	// A parsed key is certified as it was sent.
	pub, err := ParseSSHPublicKey(edLine)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub.Marshal(), newSSHKey(t, edPub).Marshal()) {
		t.Errorf("parsed key differs from the one sent")
	}
}

func newCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func pemCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestParseCSR(t *testing.T) {
	_, edPriv := newEd25519(t)
	ecPriv := newECDSA(t, elliptic.P256())
	edDER := newCSR(t, edPriv)
	ecDER := newCSR(t, ecPriv)
	badSig := bytes.Clone(edDER)
	badSig[len(badSig)-1] ^= 0xff

	tests := []struct {
		name    string
		in      []byte
		want    error
		wantKey crypto.PublicKey
	}{
		{name: "ed25519 DER", in: edDER, wantKey: edPriv.Public()},
		{name: "ed25519 PEM", in: pemCSR(edDER), wantKey: edPriv.Public()},
		{name: "P-256 PEM with surrounding space", in: append(append([]byte("\n"), pemCSR(ecDER)...), "\n\n"...), wantKey: ecPriv.Public()},
		{name: "legacy PEM type", in: pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: ecDER}), wantKey: ecPriv.Public()},
		{name: "RSA", in: newCSR(t, testRSAKey()), want: ErrUnsupportedKey},
		{name: "P-384", in: pemCSR(newCSR(t, newECDSA(t, elliptic.P384()))), want: ErrUnsupportedKey},
		{name: "bad signature", in: badSig, want: ErrInvalidRequest},
		{name: "bad signature PEM", in: pemCSR(badSig), want: ErrInvalidRequest},
		{name: "certificate PEM", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: edDER}), want: ErrInvalidRequest},
		{name: "trailing data after PEM", in: append(pemCSR(edDER), "junk"...), want: ErrInvalidRequest},
		{name: "two PEM blocks", in: append(pemCSR(edDER), pemCSR(ecDER)...), want: ErrInvalidRequest},
		{name: "trailing data after DER", in: append(bytes.Clone(edDER), 0), want: ErrInvalidRequest},
		{name: "truncated DER", in: edDER[:len(edDER)/2], want: ErrInvalidRequest},
		{name: "broken PEM", in: []byte("-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n"), want: ErrInvalidRequest},
		{name: "empty", in: nil, want: ErrInvalidRequest},
		{name: "garbage", in: []byte("hello world"), want: ErrInvalidRequest},
		{name: "oversize", in: append(pemCSR(edDER), bytes.Repeat([]byte{'\n'}, MaxCSRSize)...), want: ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.in)
			checkErr(t, err, tt.want)
			if err != nil {
				if csr != nil {
					t.Errorf("got a CSR with error; want nil")
				}
				if !strings.HasPrefix(err.Error(), "parse CSR: ") {
					t.Errorf("got error %q; want it to name the operation", err)
				}
				return
			}
			if !samePublicKey(csr.PublicKey, tt.wantKey) {
				t.Errorf("CSR holds another public key")
			}
		})
	}
}

func TestParseCSRBadSignatureMessage(t *testing.T) {
	_, edPriv := newEd25519(t)
	der := newCSR(t, edPriv)
	der[len(der)-1] ^= 1
	_, err := ParseCSR(der)
	if err == nil || !strings.Contains(err.Error(), "possession") {
		t.Errorf("got error %v; want one about proof of possession", err)
	}
}

func FuzzParseSSHPublicKey(f *testing.F) {
	edPub, _ := newEd25519(f)
	f.Add(authorizedKey(f, edPub, "alice@laptop"))
	f.Add(authorizedKey(f, &newECDSA(f, elliptic.P256()).PublicKey, ""))
	f.Add(authorizedKey(f, &newECDSA(f, elliptic.P384()).PublicKey, ""))
	f.Add([]byte(`no-pty ` + string(authorizedKey(f, edPub, ""))))
	f.Add([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x"))
	f.Add([]byte(""))
	f.Add([]byte("# comment\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		pub, err := ParseSSHPublicKey(in)
		if err != nil {
			if pub != nil {
				t.Fatalf("got key and error %v", err)
			}
			if !errors.Is(err, ErrInvalidRequest) && !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("got error %q; want one wrapping ErrInvalidRequest or ErrUnsupportedKey", err)
			}
			return
		}
		if typ := pub.Type(); typ != ssh.KeyAlgoED25519 && typ != ssh.KeyAlgoECDSA256 {
			t.Fatalf("accepted a %q key", typ)
		}
		again, err := ParseSSHPublicKey(ssh.MarshalAuthorizedKey(pub))
		if err != nil || !bytes.Equal(again.Marshal(), pub.Marshal()) {
			t.Fatalf("accepted key does not round-trip: %v", err)
		}
	})
}

func FuzzParseCSR(f *testing.F) {
	_, edPriv := newEd25519(f)
	edDER := newCSR(f, edPriv)
	ecDER := newCSR(f, newECDSA(f, elliptic.P256()))
	badSig := bytes.Clone(edDER)
	badSig[len(badSig)-1] ^= 0xff
	f.Add(edDER)
	f.Add(pemCSR(ecDER))
	f.Add(badSig)
	f.Add(newCSR(f, newECDSA(f, elliptic.P384())))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := ParseCSR(in)
		if err != nil {
			if csr != nil {
				t.Fatalf("got CSR and error %v", err)
			}
			if !errors.Is(err, ErrInvalidRequest) && !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("got error %q; want one wrapping ErrInvalidRequest or ErrUnsupportedKey", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		switch k := csr.PublicKey.(type) {
		case ed25519.PublicKey:
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				t.Fatalf("accepted an ECDSA key on %s", k.Curve.Params().Name)
			}
		default:
			t.Fatalf("accepted a %T key", k)
		}
	})
}
