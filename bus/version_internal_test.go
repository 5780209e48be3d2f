package bus

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"2.11.0", "2.11.0", 0},
		{"2.10.9", "2.11.0", -1},
		{"2.11.0", "2.10.9", 1},
		{"2.9.99", "2.10.0", -1}, // numeric, not lexical
		{"2.10.0", "2.9.99", 1},
		{"v2.15.2", "2.11.0", 1},
		{"3.0.0", "2.99.99", 1},
		{"2.11", "2.11.0", 0},
		{"2", "2.0.0", 0},
		{"2.11.1", "2.11.0", 1},
		{"2.11.0-beta.1", "2.11.0", 0}, // the -suffix is ignored
		{"2.11.0+build.5", "2.11.0", 0},
		{"2.12.0-RC.3", "2.11.0", 1},
		{"", "2.11.0", -1},
		{"garbage", "2.11.0", -1},
	}
	for _, tc := range tests {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := compareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d (antisymmetry)", tc.b, tc.a, got, -tc.want)
		}
	}
}
