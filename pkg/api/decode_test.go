package api_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/api"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    api.LoginRequest
		wantErr string // "" for success; else a fragment of the error
	}{
		{name: "minimal", body: `{"user":"alice"}`, want: api.LoginRequest{User: "alice"}},
		{name: "all fields", body: `{"user":"a","password":"p","otp":"123456","csr":"c","ssh_public_key":"k","ttl":"90m"}`,
			want: api.LoginRequest{User: "a", Password: "p", OTP: "123456", CSR: "c", SSHPublicKey: "k", TTL: api.Duration(90 * time.Minute)}},
		{name: "white space around", body: " \n\t{\"user\":\"a\"}\r\n ", want: api.LoginRequest{User: "a"}},
		{name: "empty object", body: `{}`},
		{name: "unknown field", body: `{"user":"a","admin":true}`, wantErr: `unknown field "admin"`},
		{name: "unknown nested-looking field", body: `{"user":"a","ttl":"1h","TTL2":"1h"}`, wantErr: "unknown field"},
		{name: "trailing object", body: `{"user":"a"}{"user":"b"}`, wantErr: "after the JSON object"},
		{name: "trailing garbage", body: `{"user":"a"} x`, wantErr: "after the JSON object"},
		{name: "trailing brace", body: `{"user":"a"}}`, wantErr: "after the JSON object"},
		{name: "trailing bracket", body: `{"user":"a"}]`, wantErr: "after the JSON object"},
		{name: "empty", body: ``, wantErr: "EOF"},
		{name: "only spaces", body: `   `, wantErr: "EOF"},
		{name: "null", body: `null`, wantErr: "JSON object"},
		{name: "array", body: `[]`, wantErr: "JSON object"},
		{name: "string", body: `"alice"`, wantErr: "JSON object"},
		{name: "number", body: `42`, wantErr: "JSON object"},
		{name: "truncated", body: `{"user":"a"`, wantErr: "EOF"},
		{name: "wrong type", body: `{"user":42}`, wantErr: "cannot unmarshal"},
		{name: "ttl as number", body: `{"ttl":3600}`, wantErr: "duration must be a string"},
		{name: "ttl negative", body: `{"ttl":"-1h"}`, wantErr: "negative"},
		{name: "ttl garbage", body: `{"ttl":"one hour"}`, wantErr: "duration"},
		{name: "ttl overflow", body: `{"ttl":"9999999999h"}`, wantErr: "duration"},
		{name: "ttl without unit", body: `{"ttl":"60"}`, wantErr: "missing unit"},
		{name: "oversize", body: `{"user":"` + strings.Repeat("a", api.MaxBodySize) + `"}`, wantErr: "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []struct {
				name   string
				decode func(v any) error
			}{
				{"Decode", func(v any) error { return api.Decode(strings.NewReader(tc.body), v) }},
				{"DecodeBytes", func(v any) error { return api.DecodeBytes([]byte(tc.body), v) }},
			} {
				var got api.LoginRequest
				err := via.decode(&got)
				if tc.wantErr == "" {
					if err != nil {
						t.Fatalf("%s: got error %v; want none", via.name, err)
					}
					if diff := cmp.Diff(tc.want, got); diff != "" {
						t.Errorf("%s (-want +got):\n%s", via.name, diff)
					}
					continue
				}
				if err == nil {
					t.Fatalf("%s: got %+v, no error; want an error containing %q", via.name, got, tc.wantErr)
				}
				if !errors.Is(err, api.ErrBadBody) {
					t.Errorf("%s: got error %v; want one wrapping ErrBadBody", via.name, err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%s: got error %q; want it to contain %q", via.name, err, tc.wantErr)
				}
			}
		})
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	// A body of exactly MaxBodySize bytes is accepted; one byte more is not.
	pad := api.MaxBodySize - len(`{"user":""}`)
	exact := `{"user":"` + strings.Repeat("a", pad) + `"}`
	if len(exact) != api.MaxBodySize {
		t.Fatalf("test body is %d bytes; want %d", len(exact), api.MaxBodySize)
	}
	var v api.LoginRequest
	if err := api.Decode(strings.NewReader(exact), &v); err != nil {
		t.Errorf("body of MaxBodySize bytes: got %v; want accepted", err)
	}
	if err := api.Decode(strings.NewReader(exact+" "), &v); err == nil {
		t.Errorf("body of MaxBodySize+1 bytes: got no error; want refused")
	}
	// Decode stops reading after the limit: a never-ending body is refused.
	if err := api.Decode(iotest.OneByteReader(endless{}), &v); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("endless body: got %v; want refused as too large", err)
	}
	// A read error is a bad body.
	if err := api.Decode(iotest.ErrReader(errors.New("connection reset")), &v); !errors.Is(err, api.ErrBadBody) {
		t.Errorf("read error: got %v; want ErrBadBody", err)
	}
}

// endless reads spaces forever.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: `"1h"`, want: time.Hour},
		{in: `"1h30m"`, want: 90 * time.Minute},
		{in: `"1.5h"`, want: 90 * time.Minute},
		{in: `"  45s "`, want: 45 * time.Second},
		{in: `""`, want: 0},
		{in: `"0"`, want: 0},
		{in: `"-0s"`, want: 0},
		{in: `"-1s"`, wantErr: "negative"},
		{in: `"-1h"`, wantErr: "negative"},
		{in: `"1 hour"`, wantErr: "duration"},
		{in: `"1d"`, wantErr: "unknown unit"},
		{in: `3600`, wantErr: "must be a string"},
		{in: `null`, want: 0},
		{in: `true`, wantErr: "must be a string"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var d api.Duration
			err := json.Unmarshal([]byte(tc.in), &d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, error %v; want an error containing %q", time.Duration(d), err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want %v", err, tc.want)
			}
			if time.Duration(d) != tc.want {
				t.Errorf("got %v; want %v", time.Duration(d), tc.want)
			}
		})
	}
}

func TestDurationMarshal(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, `"1h0m0s"`},
		{90 * time.Minute, `"1h30m0s"`},
		{1500 * time.Millisecond, `"1.5s"`},
		{0, `"0s"`},
	}
	for _, tc := range tests {
		b, err := json.Marshal(api.Duration(tc.d))
		if err != nil {
			t.Fatalf("Marshal(%v): %v", tc.d, err)
		}
		if string(b) != tc.want {
			t.Errorf("Marshal(%v): got %s; want %s", tc.d, b, tc.want)
		}
		var back api.Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != tc.d {
			t.Errorf("round trip of %v: got %v, %v", tc.d, time.Duration(back), err)
		}
	}
	// A zero TTL is left out of a login request.
	b, err := json.Marshal(api.LoginRequest{User: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "ttl") {
		t.Errorf("got %s; want no ttl field for a zero TTL", b)
	}
}

// roundTrip checks that v, decoded from data, encodes to JSON that
// decodes strictly to an equal value, and that encoding is stable.
func roundTrip[T any](t *testing.T, data []byte) {
	var v T
	if err := api.DecodeBytes(data, &v); err != nil {
		if !errors.Is(err, api.ErrBadBody) {
			t.Fatalf("error %v does not wrap ErrBadBody", err)
		}
		return
	}
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("decoded %+v does not encode: %v", v, err)
	}
	var back T
	if err := api.DecodeBytes(enc, &back); err != nil {
		t.Fatalf("re-encoded %s does not decode: %v", enc, err)
	}
	if diff := cmp.Diff(v, back); diff != "" {
		t.Fatalf("round trip through %s changed the value (-first +second):\n%s", enc, diff)
	}
	enc2, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if string(enc) != string(enc2) {
		t.Fatalf("encoding is not stable: %s then %s", enc, enc2)
	}
}

func FuzzDecodeLoginRequest(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice","password":"correct horse","otp":"123 456","csr":"-----BEGIN CERTIFICATE REQUEST-----","ssh_public_key":"ssh-ed25519 AAAA","ttl":"1h"}`,
		`{"ttl":""}`, `{"ttl":"-0s"}`, `{"ttl":"9223372036854775807ns"}`, `{}`, `null`, `{"user":"\ud800"}`,
		`{"user":"a"} {"user":"b"}`, `{"user":"a","x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip[api.LoginRequest](t, data)
	})
}

func FuzzDecodeCreateUserRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"bob","roles":["dev","ops"],"password":"correct horse battery"}`,
		`{"name":"","roles":null}`, `{"roles":[]}`, `{"roles":["a",null]}`, `{"name":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip[api.CreateUserRequest](t, data)
	})
}

func FuzzDecodeRole(f *testing.F) {
	for _, s := range []string{
		`{"name":"dev","logins":["ubuntu"],"max_ttl":"2h","admin":false,"created_at":"2030-01-02T03:04:05.123456789Z"}`,
		`{"name":"ops","max_ttl":"1.5h","admin":true}`,
		`{"created_at":"0001-01-01T00:00:00Z"}`, `{"created_at":"0000-01-01T00:30:00+01:00"}`,
		`{"created_at":"9999-12-31T23:59:59-23:59"}`, `{"max_ttl":"-1ns"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip[api.Role](t, data)
	})
}
