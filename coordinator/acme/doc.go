// Package acme obtains and renews certificates over ACME (RFC 8555) for
// formations that turned automatic certificates on (deisctl certs:auto on).
//
// The leading coordinator runs a Manager. Its loop is level-triggered: a
// watch on formations and certificates, or its resync timer, wakes it; it
// then reads every formation and its certificates and, for each formation
// with HTTPS.Auto whose automatic certificate is missing, does not cover
// all its domains, or has less than a third of its lifetime left, places an
// order with the ACME server (--acme-directory). HTTP-01 challenges are
// answered by the proxies: the manager writes each token and key
// authorization under Keys.ACMEChallenge, the proxies serve them at
// /.well-known/acme-challenge/<token> for the formation's domains; the
// manager asks the ACME server to validate once every live proxy node of
// the formation answers them (at most Config.Publish, 30s, later), and
// deletes them when the order ends. The issued certificate is
// stored as a Cert named "auto" with Auto set, which the proxies serve like
// one added with deisctl certs:add.
//
// Renewals are due by time: after each pass the manager sleeps until the
// next certificate is due (or a failed order's retry), or its resync
// (Config.Resync, 10m), whichever comes first.
//
// Wildcard domains need DNS-01 and are skipped. A formation whose order
// failed, or whose ACME server could not be reached, is retried after a
// growing delay (at most an hour); errors are logged with the formation and
// recorded in its ACMEStatus. Metrics (NewMetrics, registered by the
// coordinator even without a manager, so that the alert rules find them):
// deis_acme_orders_total by result, and deis_acme_failing_formations, the
// formations whose last order failed (the alert DeisACMEFailing).
package acme
