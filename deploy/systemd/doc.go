// Package systemd holds the systemd units of restartcoord and the test that
// checks them with systemd-analyze.
package systemd
