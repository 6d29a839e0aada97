package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keybrake/keybrake/client"
	"github.com/keybrake/keybrake/internal/kbtest"
	"github.com/keybrake/keybrake/store/postgres/pgtest"
)

// mountTmpfs mounts a tmpfs of size on a fresh directory and unmounts it
// when the test ends: a disk the test can fill without touching the host's.
// Where mounting is not allowed the test is skipped (it fails in CI).
func mountTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "keybrake-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		if kbtest.InCI() {
			t.Fatalf("mount a %s tmpfs (CI must allow it, as root): %v %s", size, err, out)
		}
		t.Skipf("cannot mount a tmpfs here (run as root to drill a full disk): %v %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("umount", "-l", dir).Run() //nolint:errcheck // best effort
		os.RemoveAll(dir)
	})
	return dir
}

// fill writes to path until the file system is full.
func fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			break
		}
	}
	// The last bytes: fill what the 16 KiB writes left.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			return
		}
	}
}

// TestDrillDiskFull: SQLite on a 2 MiB tmpfs that fills up. Every call the
// store cannot commit is refused with 503 store_unavailable and forwarded
// nowhere, and /healthz answers 503 too, so a load balancer stops sending
// traffic. Once space is freed, calls and /healthz recover without a
// restart.
func TestDrillDiskFull(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	dir := mountTmpfs(t, "2m")
	stripe, upstream := slowStripe(t, 0)
	p := kbtest.Serve(t, serveEnv(filepath.Join(dir, "keybrake.db"), upstream))
	admin := client.New(p.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, p, "100000")
	var tl tally
	charge := func() string {
		out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey)
		tl.add(out)
		return out
	}
	if out := charge(); out != "200" {
		t.Fatalf("first charge: %s", out)
	}
	if s := healthz(p.URL()); s != http.StatusOK {
		t.Fatalf("/healthz before the disk fills: %d", s)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	refused := 0
	for i := 0; i < 2000 && refused == 0; i++ {
		switch out := charge(); out {
		case "200":
		case "503 store_unavailable":
			refused++
		default:
			t.Fatalf("charge on a full disk: %s", out)
		}
	}
	if refused == 0 {
		t.Fatalf("2000 charges committed on a full disk (%s)", &tl)
	}
	if s := healthz(p.URL()); s != http.StatusServiceUnavailable {
		t.Errorf("/healthz on a full disk, right after a call could not commit: %d, want 503", s)
	}
	for range 20 {
		if out := charge(); out != "503 store_unavailable" && out != "200" {
			t.Errorf("charge on a full disk: %s", out)
		}
	}
	if s := healthz(p.URL()); s != http.StatusServiceUnavailable {
		t.Errorf("/healthz on a full disk: %d, want 503", s)
	}
	if n := int64(stripe.Requests()); n != tl.get("200") {
		t.Fatalf("the vendor received %d requests for %d allowed calls", n, tl.get("200"))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "charges to commit once space is free", func() bool { return charge() == "200" })
	waitFor(t, 60*time.Second, "/healthz to recover once space is free", func() bool { return healthz(p.URL()) == http.StatusOK })
	spent, reserved := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if spent != row.charged || reserved != 0 {
		t.Errorf("recorded $%s (reserved $%s), vendor charged $%s", spent, reserved, row.charged)
	}
	if n := int64(stripe.Requests()); n != tl.get("200") {
		t.Errorf("the vendor received %d requests for %d allowed calls", n, tl.get("200"))
	}
}

// TestDrillPostgresDiskFull: a private PostgreSQL cluster on a 128 MiB
// tmpfs that fills up. Inserts fail with 53100 "could not extend file",
// while small updates may still fit in existing pages, so /healthz reports
// the last failed commit for a short window rather than trusting its own
// heartbeat alone. Calls get 503 store_unavailable with nothing forwarded;
// once space is freed, calls and /healthz recover without a restart.
func TestDrillPostgresDiskFull(t *testing.T) {
	row := &drillRow{}
	reportDrill(t, row)
	dir := mountTmpfs(t, "128m")
	cluster := pgtest.StartCluster(t, pgtest.ClusterOptions{DataDir: dir})
	url, _ := pgtest.Schema(t, cluster.URL())
	stripe, upstream := slowStripe(t, 0)
	p := kbtest.Serve(t, serveEnv(url, upstream))
	admin := client.New(p.AdminURL(), kbtest.AdminToken)
	k := issueCharges(t, p, "100000")
	var tl tally
	charge := func() string {
		out, _ := drillCharge(context.Background(), p.URL(), k.VaultKey)
		tl.add(out)
		return out
	}
	if out := charge(); out != "200" {
		t.Fatalf("first charge: %s", out)
	}

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	refused := 0
	for i := 0; i < 3000 && refused < 20; i++ {
		switch out := charge(); out {
		case "200":
		case "503 store_unavailable":
			refused++
		default:
			t.Fatalf("charge on a full disk: %s", out)
		}
	}
	if refused == 0 {
		t.Fatalf("3000 charges committed on a full disk (%s)", &tl)
	}
	if s := healthz(p.URL()); s != http.StatusServiceUnavailable {
		t.Errorf("/healthz while calls cannot commit: %d, want 503", s)
	}
	if n := int64(stripe.Requests()); n != tl.get("200") {
		t.Fatalf("the vendor received %d requests for %d allowed calls", n, tl.get("200"))
	}
	t.Logf("PostgreSQL said: %s", firstLine(logLines(cluster.Log(), "No space left")))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "charges to commit once space is free", func() bool { return charge() == "200" })
	waitFor(t, 60*time.Second, "/healthz to recover once space is free", func() bool { return healthz(p.URL()) == http.StatusOK })
	spent, reserved := spentOf(t, admin, k.ID)
	row.calls, row.outcomes, row.charged, row.recorded = tl.total(), tl.String(), stripeCharged(stripe), spent
	if spent != row.charged || reserved != 0 {
		t.Errorf("recorded $%s (reserved $%s), vendor charged $%s", spent, reserved, row.charged)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
