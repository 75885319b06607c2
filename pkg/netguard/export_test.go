package netguard

// WithoutWarnings exports withoutWarnings to the external tests.
var WithoutWarnings = withoutWarnings
