// Package agent will hold the agent that runs on every VM: enrolment with a
// join token, the QUIC connections to the gateways, the local listeners and
// the SSH endpoint. It arrives with the agents-and-tunnels work; the
// identity core (certs/, gateway/, client/) does not depend on it.
package agent
