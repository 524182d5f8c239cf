// Package helm holds Tollgate's Helm chart (tollgate/) and its tests, which
// render the chart with the Helm SDK and decode every object into the
// Kubernetes API types. The tests live in a package of their own so that
// only they link the Kubernetes and Helm modules.
package helm
