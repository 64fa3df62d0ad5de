// Package metrics is the gateway's Prometheus instrumentation. What it
// exports is listed, with types, labels and meaning, in docs/METRICS.md.
//
// Three sources feed it:
//
//   - [Store], a decorator of store.Store that times every call and counts
//     what the audit events of its successful calls say (logins,
//     certificates issued, sessions, revocations, refused QUIC peers): the
//     callers do not change, and an event is counted once it is durable;
//   - [Sources], functions read at each scrape (live streams and
//     connections, the audit writer's queue, recovered panics, the
//     connection limiters), so that a gauge is never out of step with what
//     it measures;
//   - the revocation histogram ([Gateway.RevokeToDead]), fed by the relay
//     when a stream cut by a revocation has ended.
//
// No label takes a user, session, agent or node name or id: each label
// has a small, fixed set of values written in the code.
//
// [NewGateway] builds the registry (its own, never the global one, with
// the Go runtime and process collectors); pkg/metricsserver serves it.
package metrics
