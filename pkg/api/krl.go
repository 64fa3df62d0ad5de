package api

// PathKRL serves the OpenSSH key revocation list (PROTOCOL.krl) of the
// cluster's SSH user CA: the serials of revoked user certificates not yet
// expired, for sshd's RevokedKeys. Anyone may fetch it, like the CA
// bundle: it holds only random serials and the public CA key (see
// docs/KRL.md). The answer is application/octet-stream with a strong ETag.
const PathKRL = "/v1/krl"

// KRLContentType is the media type of the KRL answer.
const KRLContentType = "application/octet-stream"
