// Package exporters delivers the audit stream to SIEMs (Splunk HEC, Kafka,
// syslog, files) through durable JetStream consumers, at least once.
//
// Each exporter is a durable pull consumer, exporter-<name>, in each
// stream it reads (AUDIT and STATE by default). Events stream in batches
// (batch_size, batch_bytes, linger), are read (format.Scan), filtered,
// put in the exporter's format (native JSON, OCSF, CloudEvents) and given
// to the sink; each is acknowledged only once the sink confirmed it. A
// failed delivery is retried with exponential backoff and jitter, while
// the batch is kept from being handed to another replica; an event the
// sink rejects for good is stored, as it was, in the DEADLETTER stream
// under deadletter.<name>.<stream> and reported by an exporter.dead_letter
// event. Processes running the same exporter share its consumers; a
// restarted one resumes where the consumers are.
//
// A sink is one file: a type implementing Sink and an init function that
// calls Register with its configuration type name. The configuration:
//
//	exporters:
//	  - name: splunk
//	    type: splunk_hec          # kafka, syslog, file
//	    format: ocsf              # native (default), cloudevents
//	    filter: {types: [db.session.*], users: [alice], databases: [pg-main]}
//	    settings:                 # the sink's keys and the delivery keys
//	      url: https://splunk.example.com:8088
//	      token_file: /etc/tollgate/hec.token
//	      ack: true
//	      batch_size: 1000
//
// `tollgate exporters ls` reads List; Metrics are served by
// `tollgate start --metrics-listen`.
package exporters
