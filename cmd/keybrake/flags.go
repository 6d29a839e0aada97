package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/keybrake/keybrake/client"
)

// fieldAnnotation marks the flag that sets an API field whose name is not
// the flag's own spelled with underscores (--label sets agent_run_label).
const fieldAnnotation = "keybrake/api-field"

// setsField records that flag sets the API's field, so a refusal naming the
// field names the flag.
func setsField(fl *pflag.FlagSet, flag, field string) {
	if err := fl.SetAnnotation(flag, fieldAnnotation, []string{field}); err != nil {
		panic(err) // a typo in a flag name: a bug caught by every test
	}
}

// flagFor names the flag of cmd that sets an API field: the one annotated
// with it, else the one spelled like it (daily_usd_cap → --daily-usd-cap).
func flagFor(cmd *cobra.Command, field string) string {
	if cmd == nil || field == "" {
		return ""
	}
	found := ""
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if found == "" && len(f.Annotations[fieldAnnotation]) > 0 && f.Annotations[fieldAnnotation][0] == field {
			found = f.Name
		}
	})
	if found == "" {
		if f := cmd.Flags().Lookup(strings.ReplaceAll(field, "_", "-")); f != nil {
			found = f.Name
		}
	}
	if found == "" {
		return ""
	}
	return "--" + found
}

// flagError is an API refusal of a field, reported by the flag that set it.
type flagError struct {
	flag string
	err  *client.Error
}

func (e *flagError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.flag, e.err.Message, e.err.Code)
}

func (e *flagError) Unwrap() error { return e.err }

// nameFlag turns a refusal of an API field into one naming cmd's flag.
func nameFlag(cmd *cobra.Command, err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Field == "" {
		return err
	}
	if flag := flagFor(cmd, ce.Field); flag != "" {
		return &flagError{flag: flag, err: ce}
	}
	return err
}

// required refuses to send a request without the flags it cannot do
// without, naming each with what it wants.
func required(cmd *cobra.Command, flags map[string]string) error {
	var missing []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if hint, ok := flags[f.Name]; ok && !f.Changed && emptyValue(f.Value.String()) {
			missing = append(missing, "--"+f.Name+" is required: "+hint)
		}
	})
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

func emptyValue(s string) bool { return s == "" || s == "[]" }

// adminURL reads --url: a base URL such as http://127.0.0.1:8080. A bare
// host:port is taken as http://host:port, as curl does.
func adminURL(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", errors.New("--url is empty: give Keybrake's admin API base URL, such as http://127.0.0.1:8080 (or set KEYBRAKE_URL)")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--url %q: want Keybrake's admin API base URL, such as http://127.0.0.1:8080", raw)
	}
	return strings.TrimRight(s, "/"), nil
}
