package state

import "testing"

func TestSpecFromRelease(t *testing.T) {
	slug := &SlugRef{SHA256: "abc"}
	tests := []struct {
		name  string
		build *Build
		want  string // SlugURL or ImageArchiveURL
	}{
		// the leader's slug server when the build names none
		{"leader", &Build{Image: "stack", Slug: slug}, "http://leader/slugs/abc.tgz"},
		// the server that stored the slug, whoever leads now
		{"builder", &Build{Image: "stack", Slug: slug, SlugServer: "http://other/"}, "http://other/slugs/abc.tgz"},
		// Dockerfile releases carry their image archive instead
		{"image", &Build{Image: "app:1", ImageArchive: slug, SlugServer: "http://other"}, "http://other/slugs/abc.tgz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := SpecFromRelease(&Release{Formation: "f", Version: 3, Config: map[string]string{"A": "b"}, Build: tc.build}, "http://leader")
			got := s.SlugURL + s.ImageArchiveURL
			if got != tc.want {
				t.Errorf("url %q, want %q", got, tc.want)
			}
			if s.Env["PORT"] != "5000" || s.Env["DEIS_RELEASE"] != "v3" || s.Env["A"] != "b" || s.Image != tc.build.Image {
				t.Errorf("spec %+v", s)
			}
		})
	}
}

func TestSetFormation(t *testing.T) {
	var s ContainerSpec
	s.SetFormation(&Formation{Name: "f", UID: FirstAppUID + 3})
	if s.Formation != "f" || s.UID != FirstAppUID+3 {
		t.Errorf("allocated uid: %+v", s)
	}
	s.SetFormation(&Formation{Name: "old"}) // created before uids were allocated
	if s.UID != AppUID("old", 0) || s.UID == 0 {
		t.Errorf("fallback uid: %+v", s)
	}
}

func TestOneOffFromSpec(t *testing.T) {
	web := ContainerSpec{Name: "f.v3.web.1", Formation: "f", Release: 3, Type: "web", Index: 1, Image: "app:1",
		Command: "serve", Exec: ExecImage, Env: map[string]string{"A": "b", "PORT": "5000"}, Port: 5000,
		Limits: ResourceLimits{MemoryBytes: 64 << 20}, HealthPath: "/up", UID: FirstAppUID}
	o := OneOffFromSpec(web, "ls -l")
	if o.Type != "run" || o.Command != "ls -l" || o.Port != 0 || o.Name != "" || o.Index != 0 || o.HealthPath != "" {
		t.Errorf("one-off %+v", o)
	}
	if o.Image != "app:1" || o.Release != 3 || o.Env["A"] != "b" || o.Limits != web.Limits || o.UID != FirstAppUID || o.Exec != "" {
		t.Errorf("one-off lost the process's image, env, limits, uid or exec: %+v", o)
	}
	o.Env["A"] = "c"
	if web.Env["A"] != "b" {
		t.Error("the one-off's env is the process's map")
	}
	web.Exec = ExecDirect
	if o := OneOffFromSpec(web, "ls"); o.Exec != ExecDirect {
		t.Errorf("an image without /bin/sh: exec %q", o.Exec)
	}
}
