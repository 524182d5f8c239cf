// Package wire encodes and decodes the MySQL and MariaDB client/server
// protocol: packet framing, the basic data types, the connection phase
// (handshake, SSL request, auth switch), commands and their responses.
//
// The names follow the protocol documentation (MySQL's "Client/Server
// Protocol" pages and MariaDB's "Clients & Utilities / Server & Client
// Protocol" pages), so a reader can hold one next to the other. One message
// type lives in one small file with a symmetric Decode and Encode.
//
// Every decoder is bounds-checked: hostile input gives an error that wraps
// ErrMalformed and says which field was short or wrong; it never panics.
//
// Values of prepared-statement parameters and binary result rows are turned
// into text (Value): numbers in decimal, dates as YYYY-MM-DD[ HH:MM:SS[.ffffff]],
// times as [-]HH:MM:SS[.ffffff] (hours may exceed 24), and strings as they
// are when they are valid UTF-8. Bytes that are not valid UTF-8 (binary
// BLOBs, BIT, GEOMETRY) are given in standard base64 with Value.Base64 set;
// Value.AuditText renders that as "base64:" followed by the encoding.
package wire
