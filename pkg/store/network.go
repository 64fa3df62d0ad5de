package store

// NetworkStore holds the cluster-wide network allow/deny rules.
type NetworkStore interface{}
