package auth_test

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/auth"
)

func ExampleHasher() {
	ctx := context.Background()
	h, err := auth.NewHasher(auth.Params{}, 0) // DefaultParams, 2*GOMAXPROCS at once
	if err != nil {
		panic(err)
	}
	phc, err := h.Hash(ctx, []byte("correct horse battery staple"))
	if err != nil {
		panic(err)
	}
	ok, needsRehash, err := h.Verify(ctx, phc, []byte("correct horse battery staple"))
	fmt.Println(ok, needsRehash, err)
	ok, _, err = h.Verify(ctx, phc, []byte("Tr0ub4dor&3"))
	fmt.Println(ok, err)
	// Output:
	// true false <nil>
	// false <nil>
}

func ExampleMatchStep() {
	// The RFC 6238 test secret, and the code its SHA-1 vector gives at
	// 1111111109 seconds, entered 30 seconds late.
	const secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	now := time.Unix(1111111109+auth.Period, 0)
	step, ok, err := auth.MatchStep(secret, "081 804", now)
	fmt.Println(step, ok, err, step == auth.Step(now)-1)
	// The caller then accepts the step only if it is greater than the last
	// one accepted for the user (Store.AcceptTOTPStep).
	// Output:
	// 37037036 true <nil> true
}
