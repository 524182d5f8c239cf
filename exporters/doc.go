// Package exporters delivers the audit stream to SIEMs (Splunk HEC, Kafka,
// syslog, files) through durable JetStream consumers, at least once.
package exporters
