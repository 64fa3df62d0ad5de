package store

// RequestStore holds just-in-time access requests.
type RequestStore interface{}
