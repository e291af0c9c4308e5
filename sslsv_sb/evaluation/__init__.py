"""sslsv_sb.evaluation."""
