"""sslsv_sb.data."""
