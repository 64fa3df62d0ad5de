package asciicast_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

// FuzzReader feeds the Reader hostile recordings. It must never panic, and
// a recording it accepts must survive a round trip through the Writer with
// the same header and equivalent events: see normalize.
func FuzzReader(f *testing.F) {
	for _, name := range []string{"session.cast", "spec.cast"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(playCast))
	f.Add([]byte(hdr + `[1.5e-7, "o", "\u2028\ud800"]` + "\n" + `[0.0000015, "r", "1x65535"]`))
	f.Add([]byte(`{"version": 2, "width": 1, "height": 1, "env": {}, "title": ""}` + "\n" + `[0, "", ""]`))
	f.Add([]byte(hdr + `[999999999.999999, "o", "x"]` + "\n"))
	f.Add([]byte(hdr + `[-0, "i", ""]` + "\n" + `[0, "o", "\xff\xc3"]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := asciicast.NewReader(bytes.NewReader(in))
		if err != nil {
			return
		}
		var evs []asciicast.Event
		for {
			e, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			evs = append(evs, e)
		}

		var out bytes.Buffer
		w, err := asciicast.NewWriter(&out, r.Header())
		if err != nil {
			t.Fatalf("NewWriter(%+v) of an accepted header: %v", r.Header(), err)
		}
		for _, e := range evs {
			if err := w.WriteEvent(e); err != nil {
				t.Fatalf("WriteEvent(%.80v) of an accepted event: %v", e, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}

		r2, err := asciicast.NewReader(&out)
		if err != nil {
			t.Fatalf("reading back: %v\n%s", err, out.Bytes())
		}
		if diff := cmp.Diff(r.Header(), r2.Header(), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("header changed (-read +reread):\n%s", diff)
		}
		var got []asciicast.Event
		for {
			e, err := r2.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading back: %v\n%s", err, out.Bytes())
			}
			got = append(got, e)
		}
		if diff := cmp.Diff(normalize(evs), normalize(got)); diff != "" {
			t.Errorf("events changed (-read +reread):\n%s", diff)
		}
	})
}

// normalize drops empty output and input events, which a Writer does not
// write, and joins output or input events that follow one another at the
// same time, which a Writer may split.
func normalize(evs []asciicast.Event) []asciicast.Event {
	var out []asciicast.Event
	for _, e := range evs {
		stream := e.Type == asciicast.TypeOutput || e.Type == asciicast.TypeInput
		if stream && e.Data == "" {
			continue
		}
		if n := len(out); stream && n > 0 && out[n-1].Type == e.Type && out[n-1].Time == e.Time {
			out[n-1].Data += e.Data
			continue
		}
		out = append(out, e)
	}
	return out
}
