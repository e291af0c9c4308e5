"""sslsv_sb.losses."""
