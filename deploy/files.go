// Package deploy holds the files Tollgate is installed with, for the
// packages and the container image built by internal/packaging: the
// systemd units, the default configurations and the package scripts. They
// live here as plain files so operators can read and copy them.
package deploy

import "embed"

// Files holds systemd/, etc/ and scripts/.
//
//go:embed systemd/*.service etc/*.yaml scripts/*.sh
var Files embed.FS
