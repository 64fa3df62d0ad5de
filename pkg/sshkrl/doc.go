// Package sshkrl writes and reads OpenSSH key revocation lists (KRLs, the
// format of PROTOCOL.krl in the OpenSSH sources), the file that sshd's
// RevokedKeys and `ssh-keygen -Q -f` read.
//
// Only what a certificate authority needs is supported: certificate
// sections (KRL_SECTION_CERTIFICATES) naming a CA key, with revoked serials
// (as lists, ranges and bitmaps, whichever is smallest) and key ids. KRLs
// with plain-key, fingerprint or signature sections are refused by
// [Parse]; no KRL written by [KRL.Marshal] has them.
//
// Serial 0 cannot be revoked: OpenSSH refuses a KRL that names it.
package sshkrl
