"""sslsv_sb.ssps."""
