package discovery_test

import (
	"fmt"

	"github.com/tunnelhq/tunnel/pkg/discovery"
)

func ExampleParseGateway() {
	for _, g := range []string{"srv:prod.tunnel.example.com", "gw1.example.com:8443,gw2.example.com:8443"} {
		zone, ok, err := discovery.ParseGateway(g)
		fmt.Printf("%q srv=%v zone=%q err=%v\n", g, ok, zone, err)
	}
	// Output:
	// "srv:prod.tunnel.example.com" srv=true zone="prod.tunnel.example.com." err=<nil>
	// "gw1.example.com:8443,gw2.example.com:8443" srv=false zone="" err=<nil>
}
