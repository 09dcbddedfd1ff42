package rules

import (
	"regexp"
	"slices"
	"testing"
)

func TestLiteralPrefixes(t *testing.T) {
	tests := []struct {
		pattern string
		want    []string // nil: left to the regexp
	}{
		{`^(Basic|Token|Bearer) `, []string{"Basic ", "Bearer ", "Token "}},
		{`^Bearer `, []string{"Bearer "}},
		{`\ABearer`, []string{"Bearer"}},
		{`^(?:a|b)(c|d)`, []string{"ac", "ad", "bc", "bd"}},
		{`^[ab]x`, []string{"ax", "bx"}},
		{`^(a|)`, []string{"", "a"}},
		{`^Bearer$`, nil},             // must end there
		{`Bearer `, nil},              // anywhere in the value
		{`(?m)^Bearer `, nil},         // at the start of any line
		{`(?i)^bearer `, nil},         // any case
		{`^Bearer .+`, nil},           // not a finite set
		{`^Bearer \S`, nil},           // a class too large to expand
		{`^x?`, nil},                  // optional parts are left to the regexp
		{`^[a-z]`, nil},               // 26 > maxPrefixes
		{"^\ufffd", nil},              // the regexp reads invalid bytes as U+FFFD
		{`^[\x{D800}-\x{D801}]`, nil}, // surrogates: string(r) would be U+FFFD
		{`^a\x{DFFF}`, nil},
		{`^(a|b|c|d)(e|f|g|h)(i|j)`, nil}, // 32 > maxPrefixes
	}
	for _, tt := range tests {
		got, ok := literalPrefixes(tt.pattern)
		if tt.want == nil {
			if ok {
				t.Errorf("literalPrefixes(%q) = %q; want it left to the regexp", tt.pattern, got)
			}
			continue
		}
		slices.Sort(got)
		if !ok || !slices.Equal(got, tt.want) {
			t.Errorf("literalPrefixes(%q) = %q, %v; want %q", tt.pattern, got, ok, tt.want)
		}
	}
}

// headerSeeds are header patterns and values for FuzzValueMatcher.
var headerSeeds = []struct{ pattern, value string }{
	{`^(Basic|Token|Bearer) `, "Basic YTpi"},
	{`^(Basic|Token|Bearer) `, "basic YTpi"},
	{`^(Basic|Token|Bearer) `, " Bearer x"},
	{`^(Basic|Token|Bearer) `, "Bearer"},
	{`^(Basic|Token|Bearer) `, "Token\x00 x"},
	{`^Bearer `, "Bearer\xff "},
	{`^[ab]x`, "bxy"},
	{`^(a|)`, ""},
	{"^\u00e9", "\xc3\xa9t\xc3\xa9"},
	{`^Bearer$`, "Bearer"},
	{`^[\x{D800}-\x{D801}]`, "\ufffd"},
}

// FuzzValueMatcher checks that a header rule answers as its regexp would,
// whether it compares prefixes or runs the regexp: a bypass rule that
// matched more than its pattern would let requests through anonymous.
func FuzzValueMatcher(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add(s.pattern, s.value)
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return
		}
		if got, want := newValueMatcher(re).MatchString(value), re.MatchString(value); got != want {
			prefixes, _ := literalPrefixes(pattern)
			t.Fatalf("pattern %q, value %q: matcher says %v (prefixes %q), regexp says %v", pattern, value, got, prefixes, want)
		}
	})
}
