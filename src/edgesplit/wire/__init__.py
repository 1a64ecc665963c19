"""What travels between edge and cloud: tensor codecs, Open Inference Protocol v2 bodies and
request signing. Pure functions shared by both ends, so the two cannot drift apart."""
