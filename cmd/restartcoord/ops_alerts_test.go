package main

import (
	"os"
	"path/filepath"
)

// The alert configuration files of the usage tables: the shipped example,
// and one with two problems (both must be reported, nothing sent).
var (
	validAlertsFile   = filepath.Join("..", "..", "deploy", "alerts.example.yaml")
	invalidAlertsFile = writeTemp("alerts-invalid-*.yaml", "receivers:\n  - name: x\n    type: carrier-pigeon\nroutes:\n  - receivers: [nobody]\n")
)

func writeTemp(pattern, content string) string {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		panic(err)
	}
	return f.Name()
}
