package session

import (
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis-proxy/portcullis/idp"
)

// FuzzChunksReassemble checks the reassembly of a chunked session cookie
// against its rule: plan lays out the Cookie header lines a browser (or a
// cookie-tossing sibling domain) might send, with the session's chunks in
// any order, repeated, quoted, on any line, among other cookies and
// foreign values under the chunks' names. Load finds the session exactly
// when every chunk is there, no name has more than maxValuesPerName
// values, and the combinations of values to try stay within maxCandidates;
// otherwise it finds none, and it never finds another.
func FuzzChunksReassemble(f *testing.F) {
	c := newClock()
	o := testOptions(c)
	st := mustStore(f, o)
	p := testProfile()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 450 {
		p.Groups = append(p.Groups, fmt.Sprintf("group-%016x", rng.Uint64()))
	}
	s := New(p, idp.Tokens{}, o)
	s.ID = "seed-chunked"
	var chunks []string
	for _, ck := range saved(f, st, s) {
		if ck.MaxAge >= 0 {
			chunks = append(chunks, ck.Value)
		}
	}
	n := len(chunks)
	if n != 3 {
		f.Fatalf("want a session of 3 chunks, got %d", n)
	}
	// Plan bytes: op in the low 3 bits, its argument above them.
	const (
		opChunk   = iota // chunk arg%n
		opQuoted         // chunk arg%n, its value quoted
		opForeign        // a foreign value (one of 4) under chunk arg%n's name
		opOther          // a cookie of another name (otherCookies[arg%len])
		opLine           // the cookies after it go on another Cookie line
		opSpace          // the next separator is ";" without a space
	)
	otherCookies := []string{
		"portcullisx=1", "portcullis_9=x", "portcullis_device=abc", "other=" + chunks[0], "portcullis_=x",
		"portcullis_1x=" + chunks[1], "portcullis", "portcullis_0=" + chunks[0], "_ga=GA1.1.1", "csrftoken=" + chunks[2],
	}
	f.Add([]byte{opChunk | 0<<3, opChunk | 1<<3, opChunk | 2<<3})
	f.Add([]byte{opChunk | 2<<3, opLine, opChunk | 1<<3, opOther | 3<<3, opChunk | 0<<3})
	f.Add([]byte{opQuoted | 0<<3, opSpace, opQuoted | 1<<3, opChunk | 1<<3, opChunk | 2<<3, opChunk | 0<<3})
	f.Add([]byte{opChunk | 0<<3, opChunk | 1<<3, opChunk | 2<<3, opForeign | 1<<3, opForeign | 2<<3})
	f.Add([]byte{opChunk | 0<<3, opChunk | 1<<3, opChunk | 2<<3, opForeign | 1<<3, opForeign | 2<<3, opForeign | 0<<3})
	f.Add([]byte{opChunk | 0<<3, opChunk | 1<<3, opForeign | 0<<3, opForeign | 1<<3, opForeign | 9<<3})
	f.Add([]byte{opChunk | 1<<3, opChunk | 2<<3, opOther | 7<<3, opOther | 5<<3})
	f.Fuzz(func(t *testing.T, plan []byte) {
		var lines [][]string
		line := []string{}
		sep := "; "
		var values [maxChunks]map[string]bool
		for i := range values {
			values[i] = map[string]bool{}
		}
		add := func(i int, v string) {
			if len(line) > 0 {
				line[len(line)-1] += sep
			}
			sep = "; "
			line = append(line, chunkName(st.name, i)+"="+v)
			values[i][strings.Trim(v, `"`)] = true
		}
		for _, b := range plan {
			arg := int(b >> 3)
			switch b & 7 {
			case opChunk:
				add(arg%n, chunks[arg%n])
			case opQuoted:
				add(arg%n, `"`+chunks[arg%n]+`"`)
			case opForeign:
				add(arg%n, fmt.Sprintf("%s%d", strings.Repeat("A", 40), arg/n%4))
			case opOther:
				if len(line) > 0 {
					line[len(line)-1] += sep
				}
				sep = "; "
				line = append(line, otherCookies[arg%len(otherCookies)])
			case opLine:
				lines = append(lines, line)
				line = []string{}
			case opSpace:
				sep = ";"
			}
		}
		lines = append(lines, line)
		r := httptest.NewRequest("GET", "/", nil)
		for _, l := range lines {
			if len(l) > 0 {
				r.Header.Add("Cookie", strings.Join(l, ""))
			}
		}

		// The rule: every chunk present; each name within its bound of
		// values; each head tried with every combination of the chunks'
		// values (the real head, whose marker says n), or alone (a foreign
		// one, which has no marker), within the bound of candidates.
		want := true
		candidates := 0
		for i := range n {
			want = want && values[i][chunks[i]]
		}
		for i := range maxChunks {
			if len(values[i]) > maxValuesPerName {
				want = false
			}
		}
		for v := range values[0] {
			if v != chunks[0] {
				candidates++
				continue
			}
			combos := 1
			for i := 1; i < n; i++ {
				combos *= max(len(values[i]), 1)
			}
			candidates += combos
		}
		if candidates > maxCandidates {
			want = false
		}

		got, err := st.Load(r)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		switch {
		case got != nil && got.ID != s.ID:
			t.Fatalf("Cookie %q opens to session %q, which the store never sealed", r.Header["Cookie"], got.ID)
		case (got != nil) != want:
			t.Fatalf("Cookie %q: session found %v, want %v (values per name %v, candidates %d)",
				r.Header["Cookie"], got != nil, want, counts(values[:n]), candidates)
		}
	})
}

func counts(values []map[string]bool) []int {
	var c []int
	for _, v := range values {
		c = append(c, len(v))
	}
	return c
}
