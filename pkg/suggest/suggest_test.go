package suggest

import "testing"

func TestClosest(t *testing.T) {
	valid := []string{"name", "address", "target"}
	for _, tt := range []struct{ word, want string }{
		{"adress", "address"}, {"tagret", "target"}, {"NAME", "name"}, {"port", ""}, {"", ""},
	} {
		if got := Closest(tt.word, valid); got != tt.want {
			t.Errorf("Closest(%q) = %q; want %q", tt.word, got, tt.want)
		}
	}
	if d := Distance("kitten", "sitting"); d != 3 {
		t.Errorf("Distance = %d; want 3", d)
	}
}
