"""sslsv_sb.models."""
