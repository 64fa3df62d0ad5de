// Package suggest finds what a person probably meant by a mistyped word:
// the configuration readers (the agent's YAML, the gateway's --config)
// use it to say "did you mean address?" for an unknown key.
package suggest

import "strings"

// Closest returns the word of valid closest to word (case-insensitive), if
// it is close enough to be a typo (an edit distance under 3); "" if none
// is.
func Closest(word string, valid []string) string {
	w := strings.ToLower(word)
	best, bestD := "", 3
	for _, v := range valid {
		if d := Distance(w, v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b; the work is
// bounded (words longer than 64 bytes are 64 apart).
func Distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
