package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's metrics table names every portcullis_* metric a running
// proxy exposes and every result its series start with, so that an alert
// can be written from the table alone.
func TestREADMEMetricsTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for line := range strings.SplitSeq(string(readme), "\n") {
		if m := regexp.MustCompile("^\\| `(portcullis_[a-z_]+)` \\|").FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	page := metricsPage(t)
	family := regexp.MustCompile(`(?m)^# TYPE (portcullis_[a-z_]+) `)
	for _, m := range family.FindAllStringSubmatch(page, -1) {
		if rows[m[1]] == "" {
			t.Errorf("README's metrics table has no row for %s", m[1])
		}
	}
	result := regexp.MustCompile(`(?m)^(portcullis_[a-z_]+)\{[^}]*\bresult="([^"]+)"`)
	for _, m := range result.FindAllStringSubmatch(page, -1) {
		if row := rows[m[1]]; row != "" && !strings.Contains(row, m[2]) {
			t.Errorf("README's row for %s does not name its result %q:\n%s", m[1], m[2], row)
		}
	}
}
