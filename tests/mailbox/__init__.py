"""A generated company mailbox with labels (the mail connector's end-to-end test)."""
