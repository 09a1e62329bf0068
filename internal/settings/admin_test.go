package settings

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminSettings(t *testing.T) {
	dir := t.TempDir()
	private, open := filepath.Join(dir, "private"), filepath.Join(dir, "open")
	for p, mode := range map[string]os.FileMode{private: 0o600, open: 0o644} {
		if err := os.WriteFile(p, []byte("token"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
	}
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"-admin", "127.0.0.1:9000"}, ""},
		{[]string{"-admin", "[::1]:9000", "-admin-actions"}, ""},
		{[]string{"-admin", "localhost:9000"}, ""},
		{[]string{"-admin", "0.0.0.0:9000", "-admin-auth", private, "-admin-actions"}, ""},
		{[]string{"-admin", "0.0.0.0:9000"}, "flag -admin: without -admin-auth"},
		{[]string{"-admin", ":9000", "-admin-actions"}, "flag -admin: without -admin-auth"},
		{[]string{"-admin", "10.1.2.3:9000"}, "flag -admin: without -admin-auth"},
		{[]string{"-admin", "admin.internal:9000"}, "flag -admin: without -admin-auth"},
		{[]string{"-admin", "127.0.0.1:9000", "-admin-auth", open}, "flag -admin-auth: mode 0644"},
		{[]string{"-admin", "127.0.0.1:9000", "-admin-auth", dir}, "flag -admin-auth: not a regular file"},
		{[]string{"-admin", "127.0.0.1:9000", "-admin-auth", filepath.Join(dir, "none")}, "flag -admin-auth"},
		{[]string{"-admin-auth", private}, "flag -admin-auth needs -admin"},
		{[]string{"-admin", "127.0.0.1:9000", "-admin-tls-key", private}, "flag -admin-tls-key needs -admin-tls-cert"},
	} {
		_, err := Parse(tc.args)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.args, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	st, _ := Parse(nil)
	st.Admin = "0.0.0.0:1"
	if err := st.Validate(); err == nil || !strings.Contains(err.Error(), "Settings.Admin: without Settings.AdminAuth") {
		t.Fatalf("Validate: %v", err)
	}
}
