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
// An AUDIT message is a single event or a frame of many (events.SplitEvents
// tells them apart). Each event of a frame is a record of its own, with
// the subject it would have had alone (audit.<cluster>.<sid>.<type>), and
// is filtered, delivered or dead-lettered on its own; the frame is
// acknowledged once every one of its events is settled, and a frame handed
// back or redelivered after a crash delivers its events again. Type
// filters are therefore matched on each event, not by subject.
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
