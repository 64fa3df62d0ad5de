package cli

import (
	"testing"
)

// TestBackupScheduleConfig: the schedule's flags are keys of the YAML file,
// the recipients a list.
func TestBackupScheduleConfig(t *testing.T) {
	fs := runFlags(t, "--backup-keep", "3")
	path := writeConfig(t, "backup-dir: /var/backups/tunnel\nbackup-every: 12h\nbackup-keep: 9\nbackup-recipient: [age1aaa, age1bbb]\n")
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatalf("applyConfigFile: %v", err)
	}
	for flag, want := range map[string]string{
		"backup-dir":       "/var/backups/tunnel",
		"backup-every":     "12h0m0s",
		"backup-keep":      "3", // the command line wins
		"backup-recipient": "[age1aaa,age1bbb]",
	} {
		if got := flagValue(t, fs, flag); got != want {
			t.Errorf("--%s = %q; want %q", flag, got, want)
		}
	}
}
