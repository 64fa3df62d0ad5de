package auditlog

// QueueLen is the number of events waiting to be written (the gateway's
// metrics read it: a queue that stays long means the store is slow).
func (w *Writer) QueueLen() int { return len(w.queue) }
