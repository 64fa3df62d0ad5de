package api

// AuditPage is the most events one answer of PathAudit holds (also when
// no limit, or a larger one, is asked): page through a longer log with
// after=SEQ of the last event received.
const AuditPage = 5000
