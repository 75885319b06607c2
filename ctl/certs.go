package ctl

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deis/deis/pkg/state"
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (b *builder) certCommands() []*cli.Command {
	return []*cli.Command{
		b.cmd(&cli.Command{
			Name:     "certs",
			Aliases:  []string{"certs:list"},
			Category: "certs",
			Usage:    "list a formation's TLS certificates (domains covered, expiry, auto or manual) and its HTTPS settings",
			Flags:    []cli.Flag{formationFlag(), jsonFlag()},
		}, certsList),
		b.cmd(&cli.Command{
			Name:      "certs:add",
			Category:  "certs",
			Usage:     "serve a certificate (PEM chain, leaf first) and its private key for the formation's domains it covers",
			ArgsUsage: "CERT KEY",
			Flags: []cli.Flag{formationFlag(),
				&cli.StringFlag{Name: "name", Usage: "the certificate's name (default: its first DNS name, * written as wildcard)"}},
		}, certsAdd),
		b.cmd(&cli.Command{
			Name:      "certs:info",
			Category:  "certs",
			Usage:     "show one certificate",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{formationFlag(), jsonFlag()},
		}, certsInfo),
		b.cmd(&cli.Command{
			Name:      "certs:remove",
			Category:  "certs",
			Usage:     "stop serving a certificate and delete it with its key",
			ArgsUsage: "NAME",
			Flags:     []cli.Flag{formationFlag()},
		}, certsRemove),
		b.cmd(&cli.Command{
			Name:      "certs:redirect",
			Category:  "certs",
			Usage:     "answer plain HTTP with a 308 redirect to HTTPS (on) or serve both (off)",
			ArgsUsage: "on|off",
			Flags:     []cli.Flag{formationFlag()},
		}, certsRedirect),
		b.cmd(&cli.Command{
			Name:      "certs:hsts",
			Category:  "certs",
			Usage:     "send Strict-Transport-Security with max-age SECONDS on HTTPS responses (off: stop)",
			ArgsUsage: "SECONDS|off",
			Flags:     []cli.Flag{formationFlag()},
		}, certsHSTS),
		b.cmd(&cli.Command{
			Name:      "certs:auto",
			Category:  "certs",
			Usage:     "obtain and renew certificates over ACME for the formation's domains (the coordinator needs --acme-directory)",
			ArgsUsage: "on|off",
			Flags:     []cli.Flag{formationFlag()},
		}, certsAuto),
	}
}

// formationDomains is every domain formation form is served at: its
// default NAME.BASE and the ones added, sorted.
func formationDomains(c *cli.Context, e *env, form *state.Formation) ([]string, error) {
	ce, err := readCoordinator(c.Context, e.store)
	if err != nil {
		return nil, err
	}
	ds := append([]string{defaultDomain(ce, form.Name)}, form.Domains...)
	slices.Sort(ds)
	return slices.Compact(ds), nil
}

// readCertFiles reads and validates the CERT and KEY arguments.
func readCertFiles(certPath, keyPath string, now time.Time) (*state.Cert, error) {
	chain, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read the certificate %s: %w", certPath, err)
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read the private key %s: %w", keyPath, err)
	}
	cert, err := state.ParseCert(chain, key, now)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

func certsAdd(c *cli.Context, e *env, args []string) error {
	if len(args) != 2 {
		return usageError(c, "CERT KEY [--name NAME] [-f NAME]")
	}
	cert, err := readCertFiles(args[0], args[1], time.Now())
	if err != nil {
		return err
	}
	name := c.String("name")
	if name == "" {
		name = state.DefaultCertName(cert)
	}
	if err := state.ValidateCertName(name); err != nil {
		return err
	}
	if name == state.AutoCertName {
		return fmt.Errorf("the name %s is kept for the certificate deisctl certs:auto obtains: pass another --name", name)
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	f := form.Name
	domains, err := formationDomains(c, e, form)
	if err != nil {
		return err
	}
	covered, not := state.Coverage(cert.Domains, domains)
	if len(covered) == 0 {
		return fmt.Errorf("the certificate covers none of %s's domains (it names %s; %s serves %s): add the domain first with deisctl domains:add DOMAIN -f %s",
			f, strings.Join(cert.Domains, ", "), f, strings.Join(domains, ", "), f)
	}
	cert.Name, cert.Formation, cert.Added = name, f, time.Now().UTC()
	k := e.keys()
	ok, err := e.store.Commit(c.Context,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k.Formation(f)), ">", 0)},
		clientv3.OpPut(k.Cert(f, name), state.Marshal(cert)))
	if err != nil {
		return err
	}
	if !ok {
		return errFormationGone(f)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Adding certificate %s to %s... done (expires %s)\n", name, f, cert.NotAfter.Format("2006-01-02"))
	fmt.Fprintf(w, "Covered: %s\n", strings.Join(covered, ", "))
	if len(not) > 0 {
		fmt.Fprintf(w, "Not covered (served with the proxies' default certificate): %s\n", strings.Join(not, ", "))
	}
	return nil
}

// certJSON is a certificate as certs and certs:info print it: never the key.
type certJSON struct {
	Name        string    `json:"name"`
	Formation   string    `json:"formation"`
	Domains     []string  `json:"domains"`
	Covers      []string  `json:"covers"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
	Fingerprint string    `json:"fingerprint"`
	Auto        bool      `json:"auto"`
	Added       time.Time `json:"added"`
}

func toCertJSON(cert state.Cert, domains []string) certJSON {
	covered, _ := state.Coverage(cert.Domains, domains)
	if covered == nil {
		covered = []string{}
	}
	return certJSON{Name: cert.Name, Formation: cert.Formation, Domains: cert.Domains, Covers: covered, Issuer: cert.Issuer,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Fingerprint: cert.Fingerprint, Auto: cert.Auto, Added: cert.Added}
}

func kind(auto bool) string {
	if auto {
		return "auto"
	}
	return "manual"
}

// certsListJSON is what certs --json prints.
type certsListJSON struct {
	Formation string      `json:"formation"`
	HTTPS     state.HTTPS `json:"https"`
	Certs     []certJSON  `json:"certs"`
	// ACME is how the coordinator's last order for certs:auto went.
	ACME *state.ACMEStatus `json:"acme,omitempty"`
}

func certsList(c *cli.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageError(c, "[-f NAME]")
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	domains, err := formationDomains(c, e, form)
	if err != nil {
		return err
	}
	certs, _, err := state.List[state.Cert](c.Context, e.store.KV, e.keys().Certs(form.Name))
	if err != nil {
		return err
	}
	out := certsListJSON{Formation: form.Name, Certs: []certJSON{}}
	if form.HTTPS != nil {
		out.HTTPS = *form.HTTPS
	}
	for _, ce := range certs {
		out.Certs = append(out.Certs, toCertJSON(ce.Value, domains))
	}
	var st state.ACMEStatus
	if _, err := e.store.Get(c.Context, e.keys().ACMEStatus(form.Name), &st); err == nil {
		out.ACME = &st
	} else if !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "=== %s Certificates\n", form.Name)
	if len(out.Certs) == 0 {
		fmt.Fprintf(w, "No certificates: add one with deisctl certs:add CERT KEY -f %s, or deisctl certs:auto on -f %s\n", form.Name, form.Name)
	} else {
		rows := [][]string{}
		for _, ce := range out.Certs {
			rows = append(rows, []string{ce.Name, orDash(strings.Join(ce.Covers, ",")), ce.NotAfter.Format("2006-01-02"), kind(ce.Auto)})
		}
		if err := printTable(w, []string{"NAME", "COVERS", "EXPIRES", "TYPE"}, rows); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "Redirect HTTP to HTTPS: %s; HSTS: %s; automatic certificates: %s\n",
		onOff(out.HTTPS.Redirect), hstsText(out.HTTPS.HSTSMaxAge), onOff(out.HTTPS.Auto))
	if out.ACME != nil && out.ACME.Error != "" && out.HTTPS.Auto {
		fmt.Fprintf(w, "The last certificate order failed at %s: %s; the coordinator retries at %s\n",
			fmtTime(out.ACME.At), out.ACME.Error, fmtTime(out.ACME.Retry))
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func hstsText(age int64) string {
	if age <= 0 {
		return "off"
	}
	return "max-age=" + strconv.FormatInt(age, 10)
}

// certArg validates the NAME argument of certs:info and certs:remove.
func certArg(c *cli.Context, args []string) (string, error) {
	if len(args) != 1 {
		return "", usageError(c, "NAME [-f NAME]")
	}
	if err := state.ValidateCertName(args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

func certsInfo(c *cli.Context, e *env, args []string) error {
	name, err := certArg(c, args)
	if err != nil {
		return err
	}
	form, err := requireFormation(c, e)
	if err != nil {
		return err
	}
	var cert state.Cert
	if _, err := e.store.Get(c.Context, e.keys().Cert(form.Name, name), &cert); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("certificate %s of %s not found: list them with deisctl certs -f %s: %w", name, form.Name, form.Name, err)
		}
		return err
	}
	domains, err := formationDomains(c, e, form)
	if err != nil {
		return err
	}
	cj := toCertJSON(cert, domains)
	if c.Bool("json") {
		return printJSON(c.App.Writer, cj)
	}
	_, not := state.Coverage(cert.Domains, domains)
	fmt.Fprintf(c.App.Writer, "=== %s Certificate %s\n", form.Name, name)
	return printFields(c.App.Writer, [][2]string{
		{"Names", strings.Join(cj.Domains, ", ")},
		{"Covers", orDash(strings.Join(cj.Covers, ", "))},
		{"Not covered", orDash(strings.Join(not, ", "))},
		{"Issuer", cj.Issuer},
		{"Valid from", cj.NotBefore.Format(time.RFC3339)},
		{"Expires", cj.NotAfter.Format(time.RFC3339)},
		{"Fingerprint", "sha256:" + cj.Fingerprint},
		{"Type", kind(cj.Auto)},
		{"Added", fmtTime(cj.Added)},
	})
}

func certsRemove(c *cli.Context, e *env, args []string) error {
	name, err := certArg(c, args)
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	key := e.keys().Cert(f, name)
	ok, err := e.store.Commit(c.Context, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)}, clientv3.OpDelete(key))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("certificate %s of %s not found: list them with deisctl certs -f %s: %w", name, f, f, state.ErrNotFound)
	}
	fmt.Fprintf(c.App.Writer, "Removing certificate %s from %s... done\n", name, f)
	return nil
}

// onOffArg reads the on|off argument.
func onOffArg(c *cli.Context, args []string) (bool, error) {
	if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
		return false, usageError(c, "on|off [-f NAME]")
	}
	return args[0] == "on", nil
}

// updateHTTPS applies fn to formation f's HTTPS settings in a guarded
// update and reports whether they changed.
func updateHTTPS(c *cli.Context, e *env, f string, fn func(h *state.HTTPS) error) (bool, error) {
	changed := false
	_, err := state.Update(c.Context, e.store, e.keys().Formation(f), func(cur *state.Formation) (*state.Formation, error) {
		if cur == nil {
			return nil, errFormationGone(f)
		}
		var h state.HTTPS
		if cur.HTTPS != nil {
			h = *cur.HTTPS
		}
		old := h
		if err := fn(&h); err != nil {
			return nil, err
		}
		if h == old {
			return nil, nil
		}
		n := *cur
		n.HTTPS = &h
		if h == (state.HTTPS{}) {
			n.HTTPS = nil
		}
		changed = true
		return &n, nil
	})
	return changed, err
}

func reportChange(c *cli.Context, what, f string, changed bool) {
	if changed {
		fmt.Fprintf(c.App.Writer, "%s for %s... done\n", what, f)
	} else {
		fmt.Fprintf(c.App.Writer, "%s for %s... already so, no change\n", what, f)
	}
}

func certsRedirect(c *cli.Context, e *env, args []string) error {
	on, err := onOffArg(c, args)
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	if on {
		resp, err := e.store.KV.Get(c.Context, e.keys().Certs(f), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count == 0 {
			// Auto may be on without a certificate yet: allowed, the
			// coordinator is getting one.
			form, _, err := e.store.GetFormation(c.Context, f)
			if err != nil {
				return err
			}
			if form.HTTPS == nil || !form.HTTPS.Auto {
				return fmt.Errorf("%s has no certificate, so browsers would refuse the HTTPS it redirects to: add one with deisctl certs:add CERT KEY -f %s or turn on deisctl certs:auto on -f %s first", f, f, f)
			}
		}
	}
	changed, err := updateHTTPS(c, e, f, func(h *state.HTTPS) error { h.Redirect = on; return nil })
	if err != nil {
		return err
	}
	what := "Redirecting HTTP to HTTPS"
	if !on {
		what = "Serving plain HTTP"
	}
	reportChange(c, what, f, changed)
	return nil
}

// parseHSTS reads the SECONDS|off argument of certs:hsts.
func parseHSTS(s string) (int64, error) {
	if s == "off" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > state.MaxHSTSMaxAge {
		return 0, fmt.Errorf("invalid HSTS max-age %q: use a number of seconds from 1 to %d (a year is 31536000), or off", s, state.MaxHSTSMaxAge)
	}
	return n, nil
}

func certsHSTS(c *cli.Context, e *env, args []string) error {
	if len(args) != 1 {
		return usageError(c, "SECONDS|off [-f NAME]")
	}
	age, err := parseHSTS(args[0])
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	changed, err := updateHTTPS(c, e, f, func(h *state.HTTPS) error { h.HSTSMaxAge = age; return nil })
	if err != nil {
		return err
	}
	reportChange(c, "HSTS "+hstsText(age), f, changed)
	return nil
}

func certsAuto(c *cli.Context, e *env, args []string) error {
	on, err := onOffArg(c, args)
	if err != nil {
		return err
	}
	f, err := existingFormation(c, e)
	if err != nil {
		return err
	}
	changed, err := updateHTTPS(c, e, f, func(h *state.HTTPS) error { h.Auto = on; return nil })
	if err != nil {
		return err
	}
	if on {
		reportChange(c, "Automatic certificates (ACME) on", f, changed)
		fmt.Fprintf(c.App.Writer, "The leading coordinator obtains them if it runs with --acme-directory; see deisctl certs -f %s.\n", f)
	} else {
		reportChange(c, "Automatic certificates (ACME) off", f, changed)
	}
	return nil
}
