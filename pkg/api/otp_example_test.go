package api_test

import (
	"fmt"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func ExampleNormalizeCode() {
	for _, typed := range []string{" 123 456 ", "123-456", "12345"} {
		code, err := api.NormalizeCode(typed)
		fmt.Printf("%q %v\n", code, err)
	}
	// Output:
	// "123456" <nil>
	// "123456" <nil>
	// "" the code must be 6 digits
}
