package main

// operatorVerbs lists the verbs that drive nodes over NATS.
func operatorVerbs() []verb { return nil }
