"""sslsv_sb.brains."""
