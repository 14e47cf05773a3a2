"""The client machinery every component uses: REST, informers, work queues, leader election."""
