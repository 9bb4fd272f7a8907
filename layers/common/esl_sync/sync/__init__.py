"""The sync itself: dispatching polls, polling a merchant, delivering label jobs."""
